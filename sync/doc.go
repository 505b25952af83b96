// Package sync will own outpost's wire format and the uplink to the hub:
// versioned, compressed batches over MQTT, acknowledged end to end by the
// collector before the device deletes anything. See docs/ARCHITECTURE.md.
//
// Inside outpost, import the standard library's sync as gosync.
package sync
