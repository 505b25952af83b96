package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/outpost-edge/outpost/internal/device"
	"github.com/outpost-edge/outpost/models"
	osync "github.com/outpost-edge/outpost/sync"
)

const statusExamples = `  outpost status                          # the running daemon (listen address from the config)
  outpost status --lang sw                # what this device shares, in Swahili
  outpost status --json --config /etc/outpost/outpost.json
`

// runStatus asks the running daemon how it is and says, in plain words and
// the user's language, what this device shares. Without a daemon it says
// what the configuration would share.
func runStatus(ctx context.Context, std IO, args []string) error {
	var (
		dflags    deviceFlags
		asJSON    bool
		bandwidth bool
	)
	fs := newFlags(std, "status", "outpost status [--config FILE] [--lang en|fr|sw|ha|am] [--json]", statusExamples)
	dflags.register(fs, "models", "listen", "token", "lang")
	fs.BoolVar(&asJSON, "json", false, "print the daemon's /v1/status as JSON")
	fs.BoolVar(&bandwidth, "bandwidth", false, "bytes sent per day and per tier (30 days), budget left, days to drain the backlog")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, _, err := dflags.config()
	if err != nil {
		return err
	}
	lang := c.Lang
	url := "http://" + c.Listen + "/v1/status"
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		fmt.Fprintf(std.Out, "daemon: not reachable at %s (%v)\n", c.Listen, err)
		if err := offlineSharing(std, c, dflags, lang); err != nil {
			return err
		}
		return fmt.Errorf("%w at %s", errNotRunning, c.Listen)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != 200 {
		return fmt.Errorf("status: %s answered %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if asJSON {
		std.Out.Write(body)
		return nil
	}
	var st device.Status // the daemon's own type: one schema, written and read
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("status: %s: %w", url, err)
	}
	w := std.Out
	if bandwidth {
		bw := st.Sync.Bandwidth
		if bw == nil {
			fmt.Fprintln(w, "no broker configured: nothing is sent, so there is no bandwidth to report")
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "DAY\tBYTES\tLABELS\tEVIDENCE\tUPDATES\t")
		for _, d := range bw.Days {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", d.Day, d.Used, d.Tiers[osync.TierNameLabels], d.Tiers[osync.TierNameEvidence], d.Tiers[osync.TierNameUpdates])
		}
		tw.Flush()
		if bw.DailyBudget > 0 && bw.LeftToday != nil {
			fmt.Fprintf(w, "daily budget %d bytes, %d left today\n", bw.DailyBudget, *bw.LeftToday)
		} else {
			fmt.Fprintln(w, "no daily budget")
		}
		fmt.Fprintf(w, "backlog %d bytes", bw.Backlog)
		if bw.DaysToDrain != nil {
			fmt.Fprintf(w, ", about %.1f days to send at this rate\n", *bw.DaysToDrain)
		} else {
			fmt.Fprintln(w, ", no rate yet to estimate the days to send it")
		}
		return nil
	}
	fmt.Fprintf(w, "device %s, outpost %s, up %s\n", st.Device, st.Version, (time.Duration(st.UptimeS) * time.Second).String())
	fmt.Fprintf(w, "queue: %d results (%d bytes), %d bytes of photos/recordings waiting to go\n", st.Queue.Count, st.Queue.Bytes, st.Evidence)
	switch {
	case !st.Sync.Broker:
		fmt.Fprintln(w, "sync: no broker configured; everything stays on this device")
	case st.Sync.LastSync != nil:
		fmt.Fprintf(w, "sync: last acknowledged by the hub %s\n", st.Sync.LastSync.Local().Format(time.RFC3339))
	default:
		fmt.Fprintln(w, "sync: never acknowledged yet")
	}
	if st.Trust.Warning != "" {
		fmt.Fprintf(w, "WARNING: %s\n", st.Trust.Warning)
	} else if st.Sync.Broker {
		fmt.Fprintf(w, "trust: %d hub key(s) pinned; only their acks delete results\n", st.Trust.HubKeys)
	}
	if st.Trust.Fingerprint != "" {
		fmt.Fprintf(w, "device key: %s (fingerprint %s; the hub shows the one it enrolled)\n", st.Trust.DeviceKey, st.Trust.Fingerprint)
	}
	if st.Sync.BudgetLeft != nil {
		fmt.Fprintf(w, "budget: %d bytes left today; used by tier %s\n", *st.Sync.BudgetLeft, tiers(st.Sync.BudgetByTier))
	}
	if len(st.Sync.WireByTier) > 0 {
		fmt.Fprintf(w, "bytes on the wire since start, by tier: %s\n", tiers(st.Sync.WireByTier))
	}
	if c := st.Clock; c != nil {
		fmt.Fprintf(w, "clock: %s", c.Wall.Local().Format(time.RFC3339))
		if j := c.LastJump; j != nil {
			fmt.Fprintf(w, "; %d jump(s) noticed, the last at %s by %s (the hub corrects record times from the boot clock)",
				c.Jumps, j.At.Local().Format(time.RFC3339), j.By.Round(time.Second))
		}
		fmt.Fprintln(w)
	}
	if st.Update != nil && st.Update.Latest != nil {
		u := st.Update.Latest
		fmt.Fprintf(w, "model update: %s %s (seq %d) %s %d/%d %s\n", u.Model, u.Version, u.Seq, u.State, u.Have, u.Chunks, u.Reason)
	}
	text := st.Sharing.TextByLang[lang]
	if text == nil {
		text = st.Sharing.TextByLang["en"]
	}
	printSharing(w, text)
	return nil
}

func tiers(m map[string]int64) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if parts == nil {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func printSharing(w io.Writer, text []string) {
	fmt.Fprintln(w, "what this device shares:")
	for _, l := range text {
		fmt.Fprintln(w, "  "+l)
	}
}

// offlineSharing says what the configuration shares, for the models in
// the models directory.
func offlineSharing(std IO, c device.Config, dflags deviceFlags, lang string) error {
	if c.ModelsDir == "" {
		c.ModelsDir, _ = dflags.rf.dir()
	}
	var names []string
	tasks := map[string]string{}
	if reg, err := models.LoadDir(c.ModelsDir); err == nil {
		for _, m := range reg.Models() {
			names = append(names, m.Name)
			tasks[m.Name] = string(m.Task)
		}
	}
	for m := range c.Sharing {
		if !contains(names, m) {
			names = append(names, m)
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(std.Out, "no models found; nothing is inferred, nothing is shared")
		return nil
	}
	fmt.Fprintln(std.Out, "from the configuration:")
	printSharing(std.Out, c.SharingText(names, tasks, lang))
	return nil
}

func contains(s []string, x string) bool { return slices.Contains(s, x) }
