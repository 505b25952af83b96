// Package httpguard is the one set of rules every outpost HTTP server
// (the device's `serve`, the hub's `collect --listen`) puts in front of
// its handlers: without a token, answer only to loopback Host names (a
// DNS-rebinding page reaches a loopback server under its own name); with
// a token, require "Authorization: Bearer <token>" — or, for a browser,
// the session cookie that a POST to /login with the token sets (HttpOnly,
// SameSite=Strict: no page script ever holds the token, and it never sits
// in a URL) — on the protected paths; refuse cross-origin state changes
// from browsers. It imports
// nothing from outpost, so any package may use it.
package httpguard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// SessionCookie is the cookie a browser gets from POST /login.
const SessionCookie = "outpost_session"

// LoginPath serves the sign-in form (GET) and takes the token (POST).
const LoginPath = "/login"

// session is the cookie's value for token: derived, so the server keeps
// no state and the token itself is never stored in the browser.
func session(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("outpost session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

const loginForm = `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>outpost: sign in</title><style>body{font:16px system-ui,sans-serif;margin:2em auto;max-width:24em;padding:0 1em}
input,button{font-size:1em;padding:.4em;width:100%%;box-sizing:border-box;margin:.3em 0}</style></head><body>
<h1>outpost</h1><p>%s</p><form method="post" action="/login"><label>Access token
<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button>Sign in</button></form></body></html>`

// login serves the form and sets the session cookie for the right token.
func login(w http.ResponseWriter, r *http.Request, o Options) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	msg := "This page needs the access token set with --token."
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
		if err := r.ParseForm(); err == nil && subtle.ConstantTimeCompare([]byte(r.PostForm.Get("token")), []byte(o.Token)) == 1 {
			http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: session(o.Token), Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: 30 * 24 * 3600})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		w.WriteHeader(http.StatusUnauthorized)
		msg = "Wrong token. Try again."
	}
	fmt.Fprintf(w, loginForm, msg)
}

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
	cookie := []byte(session(o.Token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == LoginPath && (r.Method == http.MethodGet || r.Method == http.MethodPost) {
			login(w, r, o)
			return
		}
		ok := subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1
		if c, err := r.Cookie(SessionCookie); err == nil && !ok {
			ok = subtle.ConstantTimeCompare([]byte(c.Value), cookie) == 1
		}
		if o.Protected(r.URL.Path) && !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
			o.Fail(w, http.StatusUnauthorized, "unauthorized", errors.New("missing or wrong bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
