package httpguard

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestLogin: a browser signs in once at /login; the token becomes an
// HttpOnly, SameSite=Strict session cookie that opens the API; a wrong
// token, no cookie, or a forged cookie do not (issue 25: the page kept
// the token where its scripts could read it, and in its URL).
func TestLogin(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secret data") })
	srv := httptest.NewServer(Wrap(api, Options{Token: "s3cret", Protected: func(p string) bool { return strings.HasPrefix(p, "/v1/") },
		Fail: func(w http.ResponseWriter, code int, short string, err error) {
			http.Error(w, short+": "+err.Error(), code)
		}}))
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(cookie *http.Cookie) int {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/x", nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	login := func(token string) *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+LoginPath, strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", srv.URL) // a same-origin form post
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if code := get(nil); code != 401 {
		t.Fatalf("no session: %d", code)
	}
	if resp := login("wrong"); resp.StatusCode != 401 || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp := login("s3cret")
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("right token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	c := resp.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Name != SessionCookie || strings.Contains(c.Value, "s3cret") {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not the token itself", c)
	}
	if code := get(c); code != 200 {
		t.Fatalf("with the session: %d", code)
	}
	if code := get(&http.Cookie{Name: SessionCookie, Value: strings.Repeat("0", 64)}); code != 401 {
		t.Fatalf("a forged session: %d", code)
	}
	// A page on another site cannot sign a browser in (cross-origin POST).
	req, _ := http.NewRequest("POST", srv.URL+LoginPath, strings.NewReader("token=s3cret"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := noRedirect.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("cross-site login: %v %v", resp.StatusCode, err)
	}
}
