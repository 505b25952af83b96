package models

import (
	"fmt"
)

// Guidance is what the kiosk says while the camera is open: the photo
// quality gate alone, on a small frame, in the user's language — "too
// dark", "hold still", "fill the frame with the leaf", "looks good" —
// so a farmer learns it before taking the photo, not after.
type Guidance struct {
	OK      bool    `json:"ok"`
	Reason  string  `json:"reason,omitempty"` // the gate's reason when not ok (too_dark, blurry, no_plant…)
	Text    string  `json:"text"`
	Lang    string  `json:"lang"`
	Quality Quality `json:"quality"`
}

// MaxGuideFrame bounds a guidance frame: a small JPEG from the camera.
const MaxGuideFrame = 1 << 20

// looksGood is said when a frame passes the gate.
var looksGood = map[string]string{
	"en": "Looks good: take the photo.",
	"fr": "C'est bien : prenez la photo.",
	"sw": "Inaonekana vizuri: piga picha.",
	"ha": "Yana da kyau: ɗauki hoton.",
	"am": "ጥሩ ይመስላል፦ ፎቶውን ያንሱ።",
}

// Guide measures one camera frame for m (an image model) and says what to
// do, in lang (English when there are no words in lang).
func Guide(m *Model, frame []byte, lang string) (*Guidance, error) {
	if m.Task != TaskImageClassification {
		return nil, fmt.Errorf("%w: %s does not take photos", ErrBadInput, m.Name)
	}
	if len(frame) > MaxGuideFrame {
		return nil, fmt.Errorf("%w: a guidance frame of %d bytes (at most %d: send a small frame)", ErrBadInput, len(frame), MaxGuideFrame)
	}
	pre := m.Preprocessing
	img, err := DecodeImageScaled(frame, pre.Width, pre.Height)
	if err != nil {
		return nil, err
	}
	q := MeasureQuality(img, pre.Width, pre.Height)
	g := &Guidance{Quality: q, Lang: lang}
	if g.Lang == "" {
		g.Lang = "en"
	}
	gate := m.Quality.Gate()
	reason := gate.Check(q)
	g.OK, g.Reason = reason == "", reason
	key := reason
	if g.OK {
		key = "ok"
	}
	g.Text, _ = GuideText(m, key, g.Lang)
	return g, nil
}

// GuideText is what guidance says for a gate reason ("ok" when the frame
// passes) in lang, English when lang has no words; ok is false for a
// reason the gate does not give.
func GuideText(m *Model, reason, lang string) (string, bool) {
	words := looksGood
	if reason != "ok" {
		words = AdviceFor(m)["retake_"+reason]
	}
	if len(words) == 0 {
		return "", false
	}
	if t := words[lang]; t != "" {
		return t, true
	}
	return words["en"], words["en"] != ""
}
