// Package httpguard is the one set of rules every outpost HTTP server
// (the device's `serve`, the hub's `collect --listen`) puts in front of
// its handlers: without a token, answer only to loopback Host names (a
// DNS-rebinding page reaches a loopback server under its own name); with
// a token, require "Authorization: Bearer <token>" on the protected
// paths; refuse cross-origin state changes from browsers. It imports
// nothing from outpost, so any package may use it.
package httpguard

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Fail writes an error answer: code, a short machine word, the detail.
type Fail func(w http.ResponseWriter, code int, short string, detail error)

// Options configure Wrap.
type Options struct {
	Token string
	// Protected reports whether a path needs the token (when one is set);
	// the rest (a page, /healthz) stays open.
	Protected func(path string) bool
	Fail      Fail
}

// Wrap puts the rules in front of next.
func Wrap(next http.Handler, o Options) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.Fail(w, http.StatusForbidden, "cross_origin", fmt.Errorf("cross-origin %s refused (origin %q): use the page served here, or a non-browser client",
			r.Method, r.Header.Get("Origin")))
	}))
	return checkHost(cop.Handler(auth(next, o)), o)
}

// IsLoopback reports whether host (no port) names this machine only.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkHost(next http.Handler, o Options) http.Handler {
	if o.Token != "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		// No Host at all (HTTP/1.0 from a local script) is no browser, so
		// no rebinding: allowed.
		if host != "" && !IsLoopback(strings.Trim(host, "[]")) {
			o.Fail(w, http.StatusMisdirectedRequest, "bad_host", fmt.Errorf("host %q: without a token this API answers only to localhost, 127.0.0.1 or [::1]", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func auth(next http.Handler, o Options) http.Handler {
	if o.Token == "" {
		return next
	}
	want := []byte("Bearer " + o.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.Protected(r.URL.Path) && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
			o.Fail(w, http.StatusUnauthorized, "unauthorized", errors.New("missing or wrong bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
