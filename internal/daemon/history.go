package daemon

import (
	"context"
	"encoding/json"
	"path/filepath"
	"time"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	"github.com/outpost-edge/outpost/internal/safefile"
	"github.com/outpost-edge/outpost/models"
)

// HistoryFile (in the data dir) keeps the kiosk's last answers, so its
// list of past answers — each reopening its answer, advice, review and
// speech — survives a restart (it was an in-memory list). Photos are not
// kept in it; the answers themselves are the device's own.
const HistoryFile = "history.json"

// loadHistory reads the answers kept by an earlier run (a damaged file is
// moved aside and the list starts empty).
func (d *Daemon) loadHistory() {
	// The result is kept as the JSON it was (classResult reads it back).
	var raw []struct {
		stored
		Result json.RawMessage `json:"result"`
	}
	if err := safefile.LoadJSON(filepath.Join(d.cfg.DataDir, HistoryFile), 8<<20, &raw); err != nil {
		d.log.Warn("kiosk history damaged; starting with none", "err", err)
		return
	}
	saved := make([]stored, len(raw))
	for i, r := range raw {
		saved[i] = r.stored
		saved[i].Result = r.Result
	}
	if len(saved) > recentMax {
		saved = saved[len(saved)-recentMax:]
	}
	d.recentMu.Lock()
	d.recent = saved
	d.recentMu.Unlock()
}

// historyLoop writes the history at most once a second after it changed,
// and once more when the daemon stops: never in the request's path.
func (d *Daemon) historyLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.saveHistory()
			return
		case <-t.C:
			d.saveHistory()
		}
	}
}

func (d *Daemon) saveHistory() {
	d.recentMu.Lock()
	if !d.historyDirty {
		d.recentMu.Unlock()
		return
	}
	b, err := json.Marshal(d.recent)
	d.historyDirty = false
	d.recentMu.Unlock()
	if err == nil {
		err = atomicfile.WriteBytes(filepath.Join(d.cfg.DataDir, HistoryFile), b, 0o640)
	}
	if err != nil {
		d.log.Warn("kiosk history not saved", "err", err)
	}
}

// classResult is a stored answer's classification, whether it was made in
// this run or read back from the history file (as JSON).
func classResult(s *stored) (*models.ClassResult, bool) {
	switch r := s.Result.(type) {
	case *models.ClassResult:
		return r, true
	case json.RawMessage:
		var cr models.ClassResult
		if json.Unmarshal(r, &cr) == nil && cr.Outcome != "" {
			return &cr, true
		}
	}
	return nil, false
}
