package daemon

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"

	"github.com/outpost-edge/outpost/models"
	"github.com/outpost-edge/outpost/outbox"
	osync "github.com/outpost-edge/outpost/sync"
	"github.com/outpost-edge/outpost/tts"
)

// helpText is what the kiosk says when asked for help.
var helpText = map[string]string{
	"en": "Take a photo of one leaf in daylight. To hear the answer again, say outpost, then repeat.",
	"fr": "Prenez une photo d'une feuille à la lumière du jour. Pour réentendre la réponse, dites outpost, puis répète.",
	"sw": "Piga picha ya jani moja kwenye mwanga wa mchana. Kusikia jibu tena, sema outpost, kisha rudia.",
	"ha": "Ɗauki hoton ganye ɗaya a hasken rana. Don sake jin amsar, faɗi outpost, sannan maimaita.",
	"am": "በቀን ብርሃን የአንድ ቅጠል ፎቶ ያንሱ። መልሱን እንደገና ለመስማት outpost ይበሉ፣ ከዚያ ድገም ይበሉ።",
}

type speech struct {
	cache          *tts.Cache
	requests, hits atomic.Int64
	unavailable    atomic.Int64
	announced      atomic.Bool // the regional warnings were said once since start
}

func newSpeech(d *Daemon) *speech {
	return &speech{cache: &tts.Cache{Dir: filepath.Join(d.cfg.DataDir, "speech-cache"), MaxBytes: 64 << 20,
		Synth: &tts.Espeak{Rate: d.cfg.SpeechRate}}}
}

// answerText is what the kiosk says for a result in lang: the advice, as
// the pipeline would give it in that language (it names the disease).
func (d *Daemon) answerText(s *stored, lang string) (string, error) {
	cr, ok := classResult(s)
	if !ok {
		return "", errors.New("only photo answers are spoken")
	}
	if lang == cr.Lang || lang == "" {
		return cr.Advice, nil
	}
	key := models.MeaningOf(models.TaskImageClassification, cr).AdviceKey
	var m *models.Model
	if found, err := d.dev.Model(s.Model); err == nil {
		m = found
	}
	advice := models.AdviceFor(m)
	if text := advice[key][lang]; text != "" {
		return text, nil
	}
	return "", fmt.Errorf("no advice for %q in %q", key, lang)
}

// reviewedBy opens a spoken review, per language.
var reviewedBy = map[string]string{
	"en": "An agronomist checked your photo.",
	"fr": "Un agronome a vérifié votre photo.",
	"sw": "Mtaalamu wa kilimo amekagua picha yako.",
	"ha": "Masanin aikin gona ya duba hotonka.",
	"am": "የግብርና ባለሙያ ፎቶዎን መርምሯል።",
}

// reviewText is what the kiosk says for a reviewed result: who answered,
// then the expert's advice when it is in the language asked for, else the
// model's advice for the label the expert chose, in that language.
func (d *Daemon) reviewText(rv *osync.Review, model, lang string) (string, error) {
	if lang == "" {
		lang = rv.Lang
	}
	if lang == "" {
		lang = d.cfg.Lang
	}
	open := reviewedBy[lang]
	if open == "" {
		open = reviewedBy["en"]
	}
	if rv.Advice != "" && (rv.Lang == lang || rv.Lang == "") {
		return open + " " + rv.Advice, nil
	}
	var m *models.Model
	if found, err := d.dev.Model(model); err == nil {
		m = found
	}
	advice := models.AdviceFor(m)
	if text := advice[rv.Label][lang]; text != "" {
		return open + " " + text, nil
	}
	return "", fmt.Errorf("the review says %q in %q; nothing to say in %q", rv.Label, rv.Lang, lang)
}

// handleResultSpeech: GET /v1/results/{id}/speech?lang=sw — the answer
// spoken (WAV), from the cache when it was said before.
func (d *Daemon) handleResultSpeech(w http.ResponseWriter, r *http.Request) {
	d.speech.requests.Add(1)
	id := r.PathValue("id")
	if _, err := outbox.ParseID(id); err != nil {
		fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("result id %q", id))
		return
	}
	var found *stored
	d.recentMu.Lock()
	for i := range d.recent {
		if d.recent[i].ID == id {
			s := d.recent[i]
			found = &s
		}
	}
	d.recentMu.Unlock()
	if found == nil {
		fail(w, http.StatusNotFound, "not_found", fmt.Errorf("no recent result %s", id))
		return
	}
	lang := r.URL.Query().Get("lang")
	text, err := d.answerText(found, lang)
	if rid, _ := outbox.ParseID(id); d.dev.Review(rid) != nil {
		// The expert's answer is said instead of the model's: it corrects
		// it, and a farmer who cannot read must hear the correction, not
		// both answers one after the other.
		text, err = d.reviewText(d.dev.Review(rid), found.Model, lang)
	}
	if err != nil {
		fail(w, http.StatusNotFound, "nothing_to_say", err)
		return
	}
	d.say(w, r, text, lang)
}

// handleSpeech: GET /v1/speech?say=help&lang=sw — the kiosk's prompts.
func (d *Daemon) handleSpeech(w http.ResponseWriter, r *http.Request) {
	d.speech.requests.Add(1)
	lang := r.URL.Query().Get("lang")
	if lang == "" {
		lang = d.cfg.Lang
	}
	switch r.URL.Query().Get("say") {
	case "help":
		// Help also says what the region is warned of: "outpost … help"
		// is how a farmer who cannot read asks what the screen shows.
		text := helpText[lang]
		if wt, err := d.warningsText(lang); err == nil {
			text = wt + " " + text
			d.speech.announced.Store(true)
		}
		d.say(w, r, text, lang)
	case "warnings":
		text, err := d.warningsText(lang)
		if err != nil {
			fail(w, http.StatusNotFound, "nothing_to_say", err)
			return
		}
		d.speech.announced.Store(true)
		d.say(w, r, text, lang)
	case "guide":
		// The camera guidance, spoken: only the gate's own sentences (the
		// text is never taken from the request).
		m, err := d.dev.Registry().Get("crop-disease")
		if err != nil {
			fail(w, http.StatusNotFound, "unknown_model", err)
			return
		}
		text, ok := models.GuideText(m, r.URL.Query().Get("reason"), lang)
		if !ok {
			fail(w, http.StatusBadRequest, "bad_request", errors.New("reason: want ok or one of the photo gate's reasons"))
			return
		}
		d.say(w, r, text, lang)
	default:
		fail(w, http.StatusBadRequest, "bad_request", errors.New("say: want help, warnings or guide"))
	}
}

func (d *Daemon) say(w http.ResponseWriter, r *http.Request, text, lang string) {
	if lang == "" {
		lang = d.cfg.Lang
	}
	wav, hit, err := d.speech.cache.Speak(r.Context(), text, lang, d.cfg.SpeechRate)
	switch {
	case errors.Is(err, tts.ErrNoVoice):
		fail(w, http.StatusNotFound, "no_voice", err)
		return
	case err != nil:
		d.speech.unavailable.Add(1)
		fail(w, http.StatusServiceUnavailable, "tts_unavailable", err)
		return
	}
	if hit {
		d.speech.hits.Add(1)
	}
	w.Header().Set("Content-Type", "audio/wav")
	w.Header().Set("Cache-Control", "no-cache") // the daemon's cache is the cache; a repeat is asked for again
	w.Write(wav)
}
