package leasehold

import "time"

// The Elector's published status: what IsLeader, Term and Leader report,
// written by Run's goroutine. This file holds every access to Elector.mu
// for it.

// status is what IsLeader, Leader and Check report. Guarded by Elector.mu.
type status struct {
	leading       bool
	lastRenewSent instant        // send time of the last successful write of our term
	holder        string         // last observed holder
	seenVersion   string         // versionOf the newest Lease seen
	term          *publishedTerm // the current term, while leading
	// workOverdue is set while the work of a lost term is still running
	// after the safety margin ran out.
	workOverdue      bool
	workOverdueSince time.Time
}

// IsLeader reports whether this process holds the lease now: it won the
// last term it campaigned for, it has not stepped down, and its last
// successful renewal was sent less than RenewDeadline ago.
func (e *Elector) IsLeader() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leadingLocked()
}

// leadingLocked is the one validity check of the published status: a term
// won and not stepped down, renewed within RenewDeadline. e.mu is held.
func (e *Elector) leadingLocked() bool {
	return e.status.leading && leaderValid(e.status.lastRenewSent, e.now(), e.t.renewDeadline)
}

// Term returns the current term while this process leads (as IsLeader
// reports), and false otherwise.
func (e *Elector) Term() (Term, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.status.term == nil || !e.leadingLocked() {
		return Term{}, false
	}
	return e.status.term.info, true
}

// Leader returns the holder identity last observed on the Lease, "" if none
// was seen yet or the Lease was released.
func (e *Elector) Leader() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.holder
}

// setLeading updates the status IsLeader, Term and Yield read. A zero
// lastSent keeps the previous value.
func (e *Elector) setLeading(leading bool, lastSent instant, term *publishedTerm) {
	e.mu.Lock()
	changed := e.status.leading != leading
	e.status.leading = leading
	e.status.term = term
	if !lastSent.IsZero() {
		e.status.lastRenewSent = lastSent
	}
	e.mu.Unlock()
	if changed {
		e.cfg.Metrics.LeaderChanged(e.cfg.Name, leading)
	}
}

// publishedTerm is what a term in progress shows the Elector's methods.
type publishedTerm struct {
	info   Term
	yields chan<- *yieldRequest // Yield's requests to the term
	ended  <-chan struct{}      // closed when the term ends
}

// setRenewed records the send time of a successful renewal.
func (e *Elector) setRenewed(sent instant) {
	e.mu.Lock()
	e.status.lastRenewSent = sent
	e.mu.Unlock()
}

// workOutlived marks the work of a lost term as overdue until it returns,
// so Check fails meanwhile. The returned channel closes when it returns.
func (e *Elector) workOutlived(work <-chan workResult) <-chan struct{} {
	e.mu.Lock()
	e.status.workOverdue = true
	e.status.workOverdueSince = e.clock.Now()
	e.mu.Unlock()
	returned := make(chan struct{})
	go func() {
		<-work
		e.mu.Lock()
		e.status.workOverdue = false
		e.mu.Unlock()
		close(returned)
	}()
	return returned
}

// seenVersion returns the version of the newest Lease this process has
// seen, "" if none.
func (e *Elector) seenVersion() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.seenVersion
}

// setHolder publishes the holder last observed ("" when the Lease was
// released or deleted) and, if set, the version it was seen at.
func (e *Elector) setHolder(holder, version string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.status.holder = holder
	if version != "" {
		e.status.seenVersion = version
	}
}

// currentTerm returns the term in progress, nil if none.
func (e *Elector) currentTerm() *publishedTerm {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status.term
}

// statusNow returns a copy of the status.
func (e *Elector) statusNow() status {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}
