package cli

import (
	"os"
	"testing"

	"github.com/outpost-edge/outpost/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopPostgres() // the throwaway cluster is a separate process
	os.Exit(code)
}
