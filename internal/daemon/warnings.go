package daemon

import (
	"errors"
	"net/http"
	"strings"
	"time"
)

// warningView is a regional warning as the kiosk shows it.
type warningView struct {
	ID      string    `json:"id"`
	Region  string    `json:"region"`
	Disease string    `json:"disease"`
	From    time.Time `json:"from"`
	Until   time.Time `json:"until"`
	Text    string    `json:"text"`
	Lang    string    `json:"lang"` // of Text: the one asked for, else English
	Source  string    `json:"source,omitempty"`
}

func (d *Daemon) warningViews(lang string) []warningView {
	out := []warningView{}
	for _, w := range d.dev.Warnings() {
		text, tl := w.Text(lang)
		out = append(out, warningView{ID: w.ID.String(), Region: w.Region, Disease: w.Disease, From: w.From, Until: w.Until,
			Text: text, Lang: tl, Source: w.Source})
	}
	return out
}

// handleWarnings: GET /v1/warnings?lang=sw — the warnings in force for this
// device's region. announce is true until they were spoken once since the
// daemon started: the kiosk page then says them unasked.
func (d *Daemon) handleWarnings(w http.ResponseWriter, r *http.Request) {
	lang := r.URL.Query().Get("lang")
	if lang == "" {
		lang = d.cfg.Lang
	}
	list := d.warningViews(lang)
	writeJSON(w, http.StatusOK, map[string]any{"warnings": list, "announce": len(list) > 0 && !d.speech.announced.Load()})
}

// warningsText is every warning in force, to be said in lang.
func (d *Daemon) warningsText(lang string) (string, error) {
	var parts []string
	for _, v := range d.warningViews(lang) {
		if v.Lang == lang {
			parts = append(parts, v.Text)
		}
	}
	if len(parts) == 0 {
		return "", errors.New("no warning in force in this language")
	}
	return strings.Join(parts, " "), nil
}
