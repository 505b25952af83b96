package device

import (
	"time"

	osync "github.com/outpost-edge/outpost/sync"
)

// Status is GET /v1/status: one type that the daemon fills, `outpost
// status` reads and the kiosk page shows (it was a nested map[string]any
// written in one place and read back through a second, anonymous schema).
type Status struct {
	Device  string      `json:"device"`
	Version string      `json:"version"`
	UptimeS int         `json:"uptime_s"`
	Models  []string    `json:"models"`
	Queue   QueueStatus `json:"queue"`
	Sync    SyncStatus  `json:"sync"`
	// Watch is the inbox watcher, when one is configured.
	Watch     *WatchStatus     `json:"watch,omitempty"`
	Update    *UpdateReport    `json:"update,omitempty"`
	Installed map[string]int64 `json:"installed"`
	// Variants: which variant each model runs on this device, as measured.
	Variants map[string]VariantChoice `json:"variants,omitempty"`
	Clock    *ClockState              `json:"clock,omitempty"`
	Sharing  SharingStatus            `json:"sharing"`
	Trust    TrustStatus              `json:"trust"`
	Speech   SpeechStatus             `json:"speech"`
	Evidence int64                    `json:"evidence_waiting_bytes"`
}

// QueueStatus is the outbox as the status reports it.
type QueueStatus struct {
	Count      int64 `json:"count"`
	Bytes      int64 `json:"bytes"`
	OldestAgeS int   `json:"oldest_age_s"`
	// Lost by policy or never stored: totals that survive restarts.
	Refused int64 `json:"refused_total"`
	Evicted int64 `json:"evicted_total"`
	Expired int64 `json:"expired_total"`
}

// SyncStatus is the uplink as the status reports it; without a broker
// only Broker and LastSync are set.
type SyncStatus struct {
	Broker         bool                 `json:"broker"`
	LastSync       *time.Time           `json:"last_sync"`
	Connected      bool                 `json:"connected"`
	RecordsSynced  int64                `json:"records_synced"`
	Connects       int64                `json:"connects"`
	RejectedByHub  int64                `json:"rejected_by_hub"`
	RefusedBatches int64                `json:"refused_batches"`
	StrayAcks      int64                `json:"stray_acks"`
	MismatchedAcks int64                `json:"mismatched_acks"`
	ForgedAcks     int64                `json:"forged_acks"`
	BudgetLeft     *int64               `json:"budget_left_bytes,omitempty"`
	BudgetByTier   map[string]int64     `json:"budget_used_by_tier,omitempty"`
	Bandwidth      *BandwidthReport     `json:"bandwidth,omitempty"`
	Evidence       *osync.EvidenceStats `json:"evidence,omitempty"`
	WireByTier     map[string]int64     `json:"wire_bytes_by_tier,omitempty"`
}

// BandwidthReport is bytes on the wire per day and tier (30 days), the
// daily budget and what is left of it, the backlog and the days to send it.
type BandwidthReport struct {
	Days        []osync.DayUse `json:"days"`
	DailyBudget int64          `json:"daily_budget"`
	LeftToday   *int64         `json:"left_today,omitempty"`
	Backlog     int64          `json:"backlog_bytes"`
	DaysToDrain *float64       `json:"days_to_drain"`
}

// WatchStatus is the inbox watcher's state.
type WatchStatus struct {
	Dir            string     `json:"dir"`
	Taken          int64      `json:"taken"`
	Failed         int64      `json:"failed"`
	Refused        int64      `json:"refused"`
	Unmovable      int        `json:"unmovable"`
	WaitingForRoom int        `json:"waiting_for_room"`
	LastPoll       *time.Time `json:"last_poll,omitempty"`
	Error          string     `json:"error,omitempty"`
	BusyFile       string     `json:"busy_file,omitempty"`
	BusyS          int        `json:"busy_s,omitempty"`
	Stuck          string     `json:"stuck,omitempty"` // why the watcher looks stuck
}

// UpdateReport is the model updates' latest state and counters.
type UpdateReport struct {
	Latest *osync.UpdateStatus `json:"latest"`
	Stats  osync.FetchStats    `json:"stats"`
}

// SharingStatus is what this device shares: the policy per model and the
// same in plain words, in the configured language and in every language.
type SharingStatus struct {
	Policies   map[string]SharePolicy `json:"policies"`
	Text       []string               `json:"text"`
	TextByLang map[string][]string    `json:"text_by_lang"`
}

// SpeechStatus counts the kiosk's spoken answers.
type SpeechStatus struct {
	Requests    int64 `json:"requests"`
	CacheHits   int64 `json:"cache_hits"`
	Unavailable int64 `json:"unavailable"`
}
