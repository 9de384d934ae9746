//go:build !linux

package leasehold

import "time"

// sinceBoot is nil where leasehold reads no suspend-aware clock: elapsed
// time is the monotonic clock's alone (see instant.go).
var sinceBoot func() time.Duration
