package models

// Outcomes of an image classification (ClassResult.Outcome).
const (
	// OutcomeDiagnosis: the model judged the photo; Uncertain says whether
	// it is sure enough to act on.
	OutcomeDiagnosis = "diagnosis"
	// OutcomeRetake: the quality gate refused the photo (Reason says why);
	// the model did not run.
	OutcomeRetake = "retake"
	// OutcomeNotALeaf: the model abstained — this does not look like
	// anything it was trained on (its abstain label won, or its top logit
	// was below the manifest's floor). Never a disease, never healthy.
	OutcomeNotALeaf = "not_a_leaf"
)

// Languages are the languages outpost answers in — advice, the kiosk, the
// hub page, spoken prompts — declared once (issue 30: the list was a
// literal in three places).
var Languages = []string{"en", "fr", "sw", "ha", "am"}

// builtinAdvice is what outpost says for a retake or an abstention when a
// model's advice file does not: every image model gets these, in the five
// languages the kiosk speaks. A model's advice.json overrides any of them
// with the same keys ("retake_too_dark", …, "not_a_leaf").
var builtinAdvice = Advice{
	"retake_" + ReasonTooDark: {
		"en": "The photo is too dark. Move into daylight, away from deep shadow, and take it again.",
		"fr": "La photo est trop sombre. Placez-vous à la lumière du jour, loin des ombres profondes, et reprenez-la.",
		"sw": "Picha ni nyeusi mno. Nenda kwenye mwanga wa mchana, mbali na kivuli kizito, kisha upige tena.",
		"ha": "Hoton ya yi duhu sosai. Koma wurin hasken rana, nesa da inuwa mai duhu, ka sake ɗauka.",
		"am": "ፎቶው በጣም ጨለማ ነው። ከጥላ ርቀው ወደ ቀን ብርሃን ይሂዱና እንደገና ያንሱ።",
	},
	"retake_" + ReasonTooBright: {
		"en": "The photo is too bright (washed out). Do not point the camera at the sun; shade the leaf with your body and take it again.",
		"fr": "La photo est trop claire (surexposée). Ne visez pas le soleil ; faites de l'ombre sur la feuille avec votre corps et reprenez-la.",
		"sw": "Picha ina mwanga mwingi mno. Usielekeze kamera kwenye jua; weka kivuli juu ya jani kwa mwili wako, kisha upige tena.",
		"ha": "Hoton ya yi haske da yawa. Kada ka nuna kyamara ga rana; ka inuwantar da ganyen da jikinka, ka sake ɗauka.",
		"am": "ፎቶው በጣም ደማቅ ነው። ካሜራውን ወደ ፀሐይ አያዙሩ፤ ቅጠሉን በሰውነትዎ ጥላ አድርገው እንደገና ያንሱ።",
	},
	"retake_" + ReasonLowContrast: {
		"en": "Nothing can be seen in the photo. Wipe the lens, hold one leaf close to the camera and take it again.",
		"fr": "On ne voit rien sur la photo. Essuyez l'objectif, approchez une feuille de l'appareil et reprenez-la.",
		"sw": "Hakuna kinachoonekana kwenye picha. Futa lenzi, shikilia jani moja karibu na kamera, kisha upige tena.",
		"ha": "Ba a ganin komai a hoton. Goge gilashin kyamara, ka riƙe ganye ɗaya kusa da kyamara, ka sake ɗauka.",
		"am": "በፎቶው ላይ ምንም አይታይም። የካሜራውን ሌንስ ይጥረጉ፣ አንድ ቅጠል ወደ ካሜራው አቅርበው እንደገና ያንሱ።",
	},
	"retake_" + ReasonNoPlant: {
		"en": "No leaf can be seen in the photo. Fill the frame with one leaf and take it again.",
		"fr": "Aucune feuille n'est visible sur la photo. Cadrez une seule feuille qui remplit l'image et reprenez-la.",
		"sw": "Hakuna jani linaloonekana kwenye picha. Jaza picha kwa jani moja, kisha upige tena.",
		"ha": "Ba a ganin ganye a hoton. Cika hoton da ganye ɗaya, ka sake ɗauka.",
		"am": "በፎቶው ላይ ቅጠል አይታይም። አንድ ቅጠል ፍሬሙን እንዲሞላ አድርገው እንደገና ያንሱ።",
	},
	"retake_" + ReasonBlurry: {
		"en": "The photo is blurred. Hold the phone still, tap the leaf on the screen to focus, and take it again.",
		"fr": "La photo est floue. Tenez le téléphone immobile, touchez la feuille à l'écran pour faire la mise au point et reprenez-la.",
		"sw": "Picha imefifia. Shika simu bila kutikisa, gusa jani kwenye skrini ili kulenga, kisha upige tena.",
		"ha": "Hoton bai fita sarai ba. Riƙe wayar ba tare da girgiza ba, taɓa ganyen a allo don ya fito sarai, ka sake ɗauka.",
		"am": "ፎቶው ደብዛዛ ነው። ስልኩን ሳያንቀሳቅሱ ይያዙ፣ ቅጠሉ ላይ ስክሪኑን ነክተው ያተኩሩና እንደገና ያንሱ።",
	},
	OutcomeNotALeaf: {
		"en": "This does not look like a leaf this model knows. Photograph one leaf of the crop, close up, and try again. If it is a leaf, ask your extension officer.",
		"fr": "Cela ne ressemble pas à une feuille que ce modèle connaît. Photographiez une feuille de la culture, de près, et réessayez. Si c'en est une, demandez à votre agent de vulgarisation.",
		"sw": "Hili halionekani kama jani ambalo mfumo huu unalijua. Piga picha ya jani moja la zao kwa karibu, kisha ujaribu tena. Ikiwa ni jani, muulize afisa ugani.",
		"ha": "Wannan bai yi kama da ganyen da wannan tsarin ya sani ba. Ɗauki hoton ganye ɗaya na amfanin gona daga kusa, ka sake gwadawa. Idan ganye ne, tambayi jami'in faɗakarwa.",
		"am": "ይህ ሞዴሉ የሚያውቀው ቅጠል አይመስልም። የሰብሉን አንድ ቅጠል በቅርበት ፎቶ አንስተው እንደገና ይሞክሩ። ቅጠል ከሆነ የግብርና ባለሙያዎን ይጠይቁ።",
	},
}

// text looks key up in the model's advice, then in the built-in table.
func (c *Classifier) text(key, lang string) (string, string) {
	if t, l := c.advice.Text(key, lang); t != "" && (l == lang || builtinAdvice[key][lang] == "") {
		return t, l
	}
	if t, l := builtinAdvice.Text(key, lang); t != "" {
		return t, l
	}
	return c.advice.Text(key, lang)
}

// BuiltinAdvice is a copy of the retake and abstention advice every image
// model gets (the kiosk speaks it too).
func BuiltinAdvice() Advice {
	out := Advice{}
	for k, v := range builtinAdvice {
		m := map[string]string{}
		for l, s := range v {
			m[l] = s
		}
		out[k] = m
	}
	return out
}
