package device

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// What leaves the device, said plainly in the five kiosk languages
// (`outpost status`, /v1/status, the kiosk's "about").
var sharingWords = map[string]struct{ never, uncertain, always, small, full string }{
	"en": {"%s: only the answer (the name and how sure the model is) leaves this device; the photo or recording stays here.",
		"%s: the answer leaves this device; when the model is unsure, a %s copy of the photo or recording is sent for an expert to check.",
		"%s: the answer and a %s copy of every photo or recording are sent.",
		"small (512 px, no location data)", "full-size"},
	"fr": {"%s : seule la réponse (le nom et la confiance du modèle) quitte cet appareil ; la photo ou l'enregistrement reste ici.",
		"%s : la réponse quitte cet appareil ; quand le modèle n'est pas sûr, une copie %s de la photo ou de l'enregistrement est envoyée à un expert.",
		"%s : la réponse et une copie %s de chaque photo ou enregistrement sont envoyées.",
		"réduite (512 px, sans localisation)", "en taille réelle"},
	"sw": {"%s: jibu pekee (jina na uhakika wa mfumo) ndilo linalotoka kwenye kifaa hiki; picha au sauti inabaki hapa.",
		"%s: jibu linatoka kwenye kifaa hiki; mfumo usipokuwa na uhakika, nakala %s ya picha au sauti inatumwa kwa mtaalamu aikague.",
		"%s: jibu na nakala %s ya kila picha au sauti vinatumwa.",
		"ndogo (pikseli 512, bila mahali)", "kamili"},
	"ha": {"%s: amsa kawai (suna da tabbacin tsarin) ke fita daga wannan na'ura; hoto ko rikodi yana nan.",
		"%s: amsa tana fita daga wannan na'ura; idan tsarin bai tabbata ba, ana aika kwafin hoto ko rikodi %s ga ƙwararre don ya duba.",
		"%s: ana aika amsa da kwafin kowane hoto ko rikodi %s.",
		"ƙarami (pikseli 512, babu wuri)", "cikakke"},
	"am": {"%s፦ መልሱ ብቻ (ስሙ እና የሞዴሉ እርግጠኝነት) ከዚህ መሣሪያ ይወጣል፤ ፎቶው ወይም ቅጂው እዚህ ይቀራል።",
		"%s፦ መልሱ ከዚህ መሣሪያ ይወጣል፤ ሞዴሉ እርግጠኛ ካልሆነ የፎቶው ወይም የቅጂው %s ግልባጭ ለባለሙያ እንዲመረምረው ይላካል።",
		"%s፦ መልሱ እና የእያንዳንዱ ፎቶ ወይም ቅጂ %s ግልባጭ ይላካሉ።",
		"ትንሽ (512 ፒክሰል፣ ያለ አካባቢ መረጃ)", "ሙሉ መጠን"},
}

// kindWords names a kind of answer for people, per task (model files are
// jargon: "kws-fp32", "silero-vad").
var kindWords = map[string]map[string]string{
	"image-classification": {"en": "Leaf photos", "fr": "Photos de feuilles", "sw": "Picha za majani", "ha": "Hotunan ganye", "am": "የቅጠል ፎቶዎች"},
	"keyword-spotting":     {"en": "Spoken commands", "fr": "Commandes vocales", "sw": "Amri za sauti", "ha": "Umarnin murya", "am": "የድምፅ ትዕዛዞች"},
	"vad":                  {"en": "Listening for speech", "fr": "Détection de la parole", "sw": "Kusikiliza sauti", "ha": "Sauraron magana", "am": "ንግግርን ማዳመጥ"},
}

// SharingText says, for each kind of answer, what leaves this device, in
// lang (English when the language has no text). tasks maps a model to its
// task; models of one kind with one policy make one line, and a model
// whose task is unknown is named as it is.
func (c *Config) SharingText(models []string, tasks map[string]string, lang string) []string {
	w, ok := sharingWords[lang]
	if !ok {
		w = sharingWords["en"]
	}
	sort.Strings(models)
	var out []string
	seen := map[string]bool{}
	for _, m := range models {
		p := c.Policy(m)
		who := m
		if k := kindWords[strings.ReplaceAll(tasks[m], "_", "-")]; k != nil {
			if who = k[lang]; who == "" {
				who = k["en"]
			}
		}
		form := w.small
		if p.Form == FormOriginal {
			form = w.full
		}
		form = strings.ReplaceAll(form, "512", strconv.Itoa(p.MaxSide))
		var line string
		switch p.Evidence {
		case ShareAlways:
			line = fmt.Sprintf(w.always, who, form)
		case ShareUncertain:
			line = fmt.Sprintf(w.uncertain, who, form)
		default:
			line = fmt.Sprintf(w.never, who)
		}
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out
}
