package stripe

import "time"

// SetSleep replaces the wait between 429 retries and records each wait.
func (s *Connector) SetSleep(f func(d time.Duration)) {
	s.sleep = func(done <-chan struct{}, d time.Duration) bool {
		f(d)
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
}
