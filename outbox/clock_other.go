//go:build !linux

package outbox

import "time"

func sinceBoot() (time.Duration, bool) { return 0, false }
