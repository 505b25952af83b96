// Package counter declares a component's counters once: a struct of int64
// fields whose tags say everything about each — `json` its name in stats
// and status JSON, `metric` and `help` its Prometheus counter. The live
// struct is changed only with sync/atomic (atomic.AddInt64(&s.C.Field, 1));
// Snapshot copies it field by field for JSON, and Collector exports every
// tagged field to Prometheus reading it in place, so a scrape copies
// nothing per metric (issue 30: a counter was written out in up to six
// places, and every scrape copied the whole struct once per metric).
//
// It is a leaf: it imports nothing from outpost, so the sync engine and the
// hub may use it.
package counter

import (
	"fmt"
	"reflect"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Set holds the live counters of type T, a struct whose counters are
// int64 fields. Other fields are the owner's to guard and fill in:
// Snapshot leaves them zero.
type Set[T any] struct {
	C      T
	fields []field
}

type field struct {
	index int
	desc  *prometheus.Desc // nil: no metric tag
}

// Init checks T once and prepares the metric descriptions; prefix goes
// before each metric name ("outpost_hub_"). It panics on a malformed
// declaration, which is a programming error found by the first test.
func (s *Set[T]) Init(prefix string) *Set[T] {
	t := reflect.TypeFor[T]()
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("counter: %v is not a struct", t))
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Int64 {
			continue
		}
		fd := field{index: i}
		if name := f.Tag.Get("metric"); name != "" {
			help := f.Tag.Get("help")
			if help == "" {
				panic(fmt.Sprintf("counter: %v.%s has a metric tag and no help", t, f.Name))
			}
			fd.desc = prometheus.NewDesc(prefix+name, help, nil, nil)
		}
		s.fields = append(s.fields, fd)
	}
	return s
}

// Snapshot is a copy of the counters, each read atomically.
func (s *Set[T]) Snapshot() T {
	var out T
	live, dst := reflect.ValueOf(&s.C).Elem(), reflect.ValueOf(&out).Elem()
	for _, f := range s.fields {
		p := live.Field(f.index).Addr().Interface().(*int64)
		dst.Field(f.index).SetInt(atomic.LoadInt64(p))
	}
	return out
}

// Describe implements prometheus.Collector.
func (s *Set[T]) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range s.fields {
		if f.desc != nil {
			ch <- f.desc
		}
	}
}

// Collect implements prometheus.Collector: each counter read in place.
func (s *Set[T]) Collect(ch chan<- prometheus.Metric) {
	live := reflect.ValueOf(&s.C).Elem()
	for _, f := range s.fields {
		if f.desc == nil {
			continue
		}
		p := live.Field(f.index).Addr().Interface().(*int64)
		ch <- prometheus.MustNewConstMetric(f.desc, prometheus.CounterValue, float64(atomic.LoadInt64(p)))
	}
}
