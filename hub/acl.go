package hub

import (
	"bufio"
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	osuser "os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/outpost-edge/outpost/internal/atomicfile"
)

// MosquittoACL is the broker ACL for outpost: the hub's user reads and
// writes every device's topics; a device (its username is its device ID)
// writes only its own results, status, fetch requests and evidence (photos
// for review, review receipts) and reads only its own ack and cmd — it
// can neither publish as another device nor read another's acks.
func MosquittoACL(hubUser string) string {
	return fmt.Sprintf(`# outpost broker ACL (mosquitto acl_file). Devices log in with their device ID.
# mosquitto.conf needs: allow_anonymous false, password_file …, acl_file …, and
# use_username_as_clientid true (a login cannot take another device's client ID).
user %s
topic readwrite outpost/v1/#
topic readwrite outpost/alerts/#
# A program that acts on alerts (docs/HUB.md, "Alerts") gets its own user:
#   user sms-gateway
#   topic read outpost/alerts/#

pattern write outpost/v1/%%u/results
pattern write outpost/v1/%%u/status
pattern write outpost/v1/%%u/fetch
pattern write outpost/v1/%%u/evidence
pattern read outpost/v1/%%u/ack
pattern read outpost/v1/%%u/cmd
`, hubUser)
}

// MosquittoPasswordLine is a mosquitto 2 password-file line for user:
// PBKDF2-SHA512 ("$7$"), 101 iterations, 12-byte salt — what
// mosquitto_passwd writes.
func MosquittoPasswordLine(user, password string) (string, error) {
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	const iter = 101
	h, err := pbkdf2.Key(sha512.New, password, salt, iter, 64)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s:$7$%d$%s$%s", user, iter, base64.StdEncoding.EncodeToString(salt), base64.StdEncoding.EncodeToString(h)), nil
}

// SetPassword adds or replaces user's line in a mosquitto password file
// (created if missing), atomically, keeping the file's owner, group and
// mode (as mosquitto_passwd does): rewritten root-owned 0600, Debian's
// mosquitto could not read it at start, and after a reload (it rereads it
// as the mosquitto user) it locked out every client, the hub's own
// included. A new file goes to the mosquitto user when there is one.
func SetPassword(path, user, password string) error {
	line, err := MosquittoPasswordLine(user, password)
	if err != nil {
		return err
	}
	_, err = editPasswords(path, user, line)
	return err
}

// RevokePassword removes user's line (a lost or retired device): the
// broker refuses its login after a reload.
func RevokePassword(path, user string) (bool, error) {
	if _, err := os.Stat(path); err != nil {
		return false, fmt.Errorf("password file: %w", err)
	}
	return editPasswords(path, user, "")
}

// editPasswords replaces user's line with line ("" removes it), keeping
// the file's owner, group and mode; it reports whether user had a line.
func editPasswords(path, user, line string) (bool, error) {
	had := false
	var out bytes.Buffer
	uid, gid, mode := -1, -1, os.FileMode(0o600)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	} else if u, err := osuser.Lookup("mosquitto"); err == nil && os.Geteuid() == 0 {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if b, err := os.ReadFile(path); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, user+":") {
				had = true
			} else if l != "" {
				out.WriteString(l + "\n")
			}
		}
	} else if !os.IsNotExist(err) {
		return false, fmt.Errorf("password file: %w", err)
	}
	if line == "" && !had {
		return false, nil // nothing to remove: the file stays as it is
	}
	if line != "" {
		out.WriteString(line + "\n")
	}
	_, err := atomicfile.Write(path, mode, func(w io.Writer) (int, error) {
		if f, ok := w.(*os.File); ok && uid >= 0 && os.Geteuid() == 0 {
			if err := f.Chown(uid, gid); err != nil {
				return 0, fmt.Errorf("password file owner: %w", err)
			}
		}
		return w.Write(out.Bytes())
	})
	return had, err
}

// NewPassword is a random password for a device or the hub.
func NewPassword() string {
	b := make([]byte, 18)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
