package daemon

import (
	"context"
	gosync "sync"
	"time"
)

// idempotency remembers recent Idempotency-Key → result, so a client that
// retries a POST after a reset connection (it cannot know whether the
// first try was stored) gets the first result back instead of storing a
// second one. It lives in memory: bounded by count and age, and it does
// not outlive the process.
type idempotency struct {
	mu    gosync.Mutex
	m     map[string]*idemEntry
	order []string // insertion order, for eviction
	max   int
	ttl   time.Duration
}

type idemEntry struct {
	done chan struct{} // closed when the first attempt ends
	res  *stored       // nil if it failed
	at   time.Time
}

const (
	idemMax = 4096
	idemTTL = 24 * time.Hour
)

func newIdempotency(max int, ttl time.Duration) *idempotency {
	return &idempotency{m: map[string]*idemEntry{}, max: max, ttl: ttl}
}

// begin returns the stored result of an earlier attempt with this key, or
// claims the key: the caller then runs the request and calls done with its
// result (nil on failure, which frees the key for another try). A retry
// that arrives while the first attempt runs waits for it.
func (i *idempotency) begin(ctx context.Context, key string) (done func(*stored), first *stored, err error) {
	for {
		i.mu.Lock()
		now := time.Now()
		e, ok := i.m[key]
		if ok && now.Sub(e.at) > i.ttl {
			delete(i.m, key)
			ok = false
		}
		if !ok {
			e = &idemEntry{done: make(chan struct{}), at: now}
			i.m[key] = e
			i.order = append(i.order, key)
			i.evict()
			i.mu.Unlock()
			return func(res *stored) {
				i.mu.Lock()
				e.res = res
				if res == nil && i.m[key] == e {
					delete(i.m, key)
				}
				i.mu.Unlock()
				close(e.done)
			}, nil, nil
		}
		i.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		i.mu.Lock()
		res := e.res
		i.mu.Unlock()
		if res != nil {
			return nil, res, nil
		}
		// The first attempt failed and freed the key: try again as the first.
	}
}

// evict drops the oldest keys beyond max (mu held). Entries still running
// are kept; their waiters hold them.
func (i *idempotency) evict() {
	for len(i.m) > i.max && len(i.order) > 0 {
		k := i.order[0]
		i.order = i.order[1:]
		if e, ok := i.m[k]; ok {
			select {
			case <-e.done:
				delete(i.m, k)
			default:
			}
		}
	}
	if len(i.order) > 2*i.max {
		// Compact keys already gone.
		kept := i.order[:0]
		for _, k := range i.order {
			if _, ok := i.m[k]; ok {
				kept = append(kept, k)
			}
		}
		i.order = kept
	}
}
