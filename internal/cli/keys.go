package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/outpost-edge/outpost/internal/atomicfile"
	osync "github.com/outpost-edge/outpost/sync"
)

const keysExamples = `  outpost keys generate --out /etc/outpost/hub.key     # writes hub.key (secret) and hub.key.pub
  outpost collect --key /etc/outpost/hub.key ...          # the hub signs its acks
  outpost serve --hub-key ed25519:…                       # devices pin the public key (config hub_keys)
`

func runKeys(ctx context.Context, std IO, args []string) error {
	var out string
	var force bool
	fs := newFlags(std, "keys", "outpost keys generate --out FILE", keysExamples)
	fs.StringVar(&out, "out", "", "private key file to write (mode 0600); the public key goes to FILE.pub")
	fs.BoolVar(&force, "force", false, "overwrite an existing key")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "generate" {
		return usagef("want 'generate'")
	}
	if out == "" {
		return usagef("keys generate needs --out FILE")
	}
	if _, err := os.Stat(out); err == nil && !force {
		return fmt.Errorf("keys: %s exists; a new key would make every device that pinned the old one refuse the hub's acks (pass --force, and pin both keys during the change)", out)
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteBytes(out, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	text := osync.FormatPublicKey(pub)
	if err := atomicfile.WriteBytes(out+".pub", []byte(text+"\n"), 0o644); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	fmt.Fprintf(std.Err, "wrote %s (keep it secret) and %s\n", out, out+".pub")
	fmt.Fprintln(std.Out, text)
	return nil
}

// loadPrivateKey reads a key `outpost keys generate` wrote.
func loadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	k, err := osync.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}
