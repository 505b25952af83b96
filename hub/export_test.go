package hub

import (
	"context"
	"io/fs"
)

// MigrateFS applies migrations from fsys (tests: a migration that fails).
func (s *PGStore) MigrateFS(ctx context.Context, fsys fs.FS) ([]int, error) {
	return s.migrate(ctx, fsys)
}
