package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/outbox"
)

// watch polls an inbox folder. A file is taken only once its size and
// modification time have not changed between two polls (a camera app or a
// USB copy still writing it is left alone), and never if its name starts
// with "." or ends in .part/.tmp/.crdownload. Each file is inferred,
// stored, then moved to done/ — or to failed/ with a NAME.reason.txt.
func (d *Daemon) watch(ctx context.Context, dir string, every time.Duration) {
	for _, sub := range []string{"done", "failed"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			d.log.Error("watch folder unusable", "dir", dir, "err", err)
			return
		}
	}
	seen := map[string]string{} // name -> "size/mtime" at the last poll
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			d.log.Warn("watch folder", "dir", dir, "err", err)
			continue
		}
		next := map[string]string{}
		for _, e := range ents {
			name := e.Name()
			if e.IsDir() || strings.HasPrefix(name, ".") || hasSuffix(name, ".part", ".tmp", ".crdownload", ".reason.txt") {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue
			}
			sig := fmt.Sprintf("%d/%d", info.Size(), info.ModTime().UnixNano())
			if seen[name] != sig {
				next[name] = sig // new or still changing: look again next time
				continue
			}
			d.takeFile(ctx, dir, name)
		}
		seen = next
	}
}

func hasSuffix(name string, sufs ...string) bool {
	for _, s := range sufs {
		if strings.HasSuffix(strings.ToLower(name), s) {
			return true
		}
	}
	return false
}

func (d *Daemon) takeFile(ctx context.Context, dir, name string) {
	path := filepath.Join(dir, name)
	model := ""
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png":
		model = d.cfg.ImageModel
	case ".wav":
		model = d.cfg.AudioModel
	}
	var err error
	var res *stored
	if model == "" {
		err = fmt.Errorf("no model for %q files (photos: .jpg .jpeg .png, audio: .wav)", filepath.Ext(name))
	} else {
		var data []byte
		if data, err = os.ReadFile(path); err == nil {
			res, err = d.InferAndStore(ctx, model, name, data, "", outbox.Normal)
		}
	}
	if err != nil {
		d.metrics.watchOut.WithLabelValues("failed").Inc()
		d.log.Warn("watch: file failed", "file", name, "err", err)
		reason := fmt.Sprintf("%s\nfile: %s\nmodel: %s\nerror: %v\n", time.Now().UTC().Format(time.RFC3339), name, model, err)
		os.WriteFile(filepath.Join(dir, "failed", name+".reason.txt"), []byte(reason), 0o640)
		os.Rename(path, filepath.Join(dir, "failed", name))
		return
	}
	d.metrics.watchOut.WithLabelValues("done").Inc()
	d.log.Info("watch: stored", "file", name, "model", model, "id", res.ID)
	// Moved only after the result is durable: a crash before this line
	// means the file is inferred again (at-least-once), never lost.
	os.Rename(path, filepath.Join(dir, "done", name))
}
