// Package powercut is a FUSE filesystem for tests that forgets, on a
// simulated power cut, everything that was not made durable — the way a
// Pi's SD card does when the power goes (after Jepsen's LazyFS).
//
// Every write is held in the filesystem's memory. A file's data and size
// become durable only when that file is fsynced or fdatasynced; a
// directory's entries (files created, renamed, removed) only when that
// directory is fsynced. Cut discards the rest — or, torn, keeps a random
// subset of a file's unsynced 4 KiB pages — then the test remounts and
// looks. A kill -9 alone never tests an fsync: the page cache survives it.
//
// What it does not model: reordering within an fsynced range (an fsync is
// all or nothing here), lying flush commands (a card that acknowledges a
// flush it did not do), metadata other than size and names (modes, times),
// and hard links.
package powercut

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	gosync "sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// PageSize is the unit of a torn write.
const PageSize = 4096

// FS is a mounted power-cut filesystem.
type FS struct {
	dir string

	mu    gosync.Mutex
	root  *dirData
	files []*fileData // every file ever created, for Cut
	dirs  []*dirData
	ino   uint64
	srv   *fuse.Server
	// Stats since Mount.
	syncs, dirSyncs int
	// A pulled stick: operations past pullAt fail with EIO (-1: never).
	ops, pullAt atomic.Int64
}

type fileData struct {
	ino     uint64
	data    []byte // what readers see now
	durable []byte // what survives a cut
	dirty   map[int64]bool
}

type dirData struct {
	ino     uint64
	entries map[string]any // *fileData or *dirData
	durable map[string]any
}

// Mount mounts an empty power-cut filesystem at dir (which must exist).
// It needs root and /dev/fuse.
func Mount(dir string) (*FS, error) {
	f := &FS{dir: dir}
	f.pullAt.Store(-1)
	f.root = f.newDir()
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Pull makes the filesystem a USB stick pulled out after n more
// operations: every later operation fails with EIO, as the kernel answers
// for a device that is gone. Pull(-1) plugs it back in (what was not made
// durable is still there until Cut).
func (f *FS) Pull(n int64) {
	if n < 0 {
		f.pullAt.Store(-1)
		return
	}
	f.pullAt.Store(f.ops.Load() + n)
}

// Ops counts the filesystem operations since Mount (what Pull counts).
func (f *FS) Ops() int64 { return f.ops.Load() }

// gone counts one operation and says whether the stick is out.
func (f *FS) gone() bool {
	n := f.ops.Add(1)
	at := f.pullAt.Load()
	return at >= 0 && n > at
}

// Dir is the mount point.
func (f *FS) Dir() string { return f.dir }

func (f *FS) newDir() *dirData {
	f.ino++
	d := &dirData{ino: f.ino, entries: map[string]any{}, durable: map[string]any{}}
	f.dirs = append(f.dirs, d)
	return d
}

func (f *FS) newFile() *fileData {
	f.ino++
	fd := &fileData{ino: f.ino, dirty: map[int64]bool{}}
	f.files = append(f.files, fd)
	return fd
}

func (f *FS) mount() error {
	zero := time.Duration(0)
	root := &dirNode{fs: f, d: f.root}
	srv, err := fs.Mount(f.dir, root, &fs.Options{
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "powercut", Name: "powercut", DisableXAttrs: true},
	})
	if err != nil {
		return fmt.Errorf("powercut: mount %s: %w", f.dir, err)
	}
	f.srv = srv
	return nil
}

// Unmount unmounts; every process using the mount must be gone.
func (f *FS) Unmount() error {
	if f.srv == nil {
		return nil
	}
	var err error
	for i := 0; i < 25; i++ {
		if err = syscall.Unmount(f.dir, 0); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // a killed child's files are still closing
	}
	if err != nil {
		// Still busy (a mapping someone leaked): detach it, as a pulled
		// plug would; the next mount is a fresh one either way.
		if derr := syscall.Unmount(f.dir, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("powercut: unmount %s: %w (detach: %v)", f.dir, err, derr)
		}
	}
	f.srv.Wait()
	f.srv = nil
	return nil
}

// CutStats says what one cut threw away.
type CutStats struct {
	DirtyFiles  int // files with unsynced data
	DirtyPages  int // unsynced pages in them
	KeptPages   int // of those, kept by a torn cut
	DirsChanged int // directories whose unsynced entries were reverted
}

// Cut is the power going out: the caller has killed every process using
// the mount. Cut unmounts, discards what was not durable (torn: keeps a
// random subset of each file's unsynced pages, as a disk that wrote some
// sectors of a flush it never finished), and mounts again.
func (f *FS) Cut(torn bool, rng *rand.Rand) (CutStats, error) {
	if err := f.Unmount(); err != nil {
		return CutStats{}, err
	}
	f.mu.Lock()
	var st CutStats
	for _, fd := range f.files {
		if len(fd.dirty) == 0 && len(fd.data) == len(fd.durable) {
			continue
		}
		st.DirtyFiles++
		st.DirtyPages += len(fd.dirty)
		if torn && rng != nil {
			pages := make([]int64, 0, len(fd.dirty))
			for p := range fd.dirty {
				pages = append(pages, p)
			}
			slices.Sort(pages)
			rng.Shuffle(len(pages), func(i, j int) { pages[i], pages[j] = pages[j], pages[i] })
			keep := pages[:rng.IntN(len(pages)+1)]
			for _, p := range keep {
				start := p * PageSize
				end := min(start+PageSize, int64(len(fd.data)))
				if start >= end {
					continue
				}
				if int64(len(fd.durable)) < end {
					fd.durable = append(fd.durable, make([]byte, end-int64(len(fd.durable)))...)
				}
				copy(fd.durable[start:end], fd.data[start:end])
				st.KeptPages++
			}
		}
		fd.data = slices.Clone(fd.durable)
		clear(fd.dirty)
	}
	for _, d := range f.dirs {
		if !sameEntries(d.entries, d.durable) {
			st.DirsChanged++
		}
		d.entries = cloneEntries(d.durable)
	}
	f.mu.Unlock()
	return st, f.mount()
}

// Syncs reports the file and directory fsyncs served since Mount.
func (f *FS) Syncs() (files, dirs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.syncs, f.dirSyncs
}

func sameEntries(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func cloneEntries(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// dirNode and fileNode are this mount's inodes over the data above, which
// outlives mounts.
type dirNode struct {
	fs.Inode
	fs *FS
	d  *dirData
}

type fileNode struct {
	fs.Inode
	fs *FS
	f  *fileData
}

var (
	_ fs.NodeLookuper  = (*dirNode)(nil)
	_ fs.NodeReaddirer = (*dirNode)(nil)
	_ fs.NodeCreater   = (*dirNode)(nil)
	_ fs.NodeMkdirer   = (*dirNode)(nil)
	_ fs.NodeUnlinker  = (*dirNode)(nil)
	_ fs.NodeRmdirer   = (*dirNode)(nil)
	_ fs.NodeRenamer   = (*dirNode)(nil)
	_ fs.NodeFsyncer   = (*dirNode)(nil)
	_ fs.NodeGetattrer = (*dirNode)(nil)
	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeWriter    = (*fileNode)(nil)
	_ fs.NodeFsyncer   = (*fileNode)(nil)
	_ fs.NodeFlusher   = (*fileNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeAllocater = (*fileNode)(nil)
)

func (n *dirNode) child(ctx context.Context, v any) *fs.Inode {
	switch c := v.(type) {
	case *fileData:
		return n.NewInode(ctx, &fileNode{fs: n.fs, f: c}, fs.StableAttr{Mode: syscall.S_IFREG, Ino: c.ino})
	case *dirData:
		return n.NewInode(ctx, &dirNode{fs: n.fs, d: c}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: c.ino})
	}
	return nil
}

func attr(v any, out *fuse.Attr) {
	switch c := v.(type) {
	case *fileData:
		out.Mode, out.Size, out.Ino = syscall.S_IFREG|0o644, uint64(len(c.data)), c.ino
		out.Blocks = (out.Size + 511) / 512
	case *dirData:
		out.Mode, out.Ino = syscall.S_IFDIR|0o755, c.ino
	}
	out.Nlink = 1
}

func (n *dirNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	attr(n.d, &out.Attr)
	return 0
}

func (n *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fs.gone() {
		return nil, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	v, ok := n.d.entries[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	attr(v, &out.Attr)
	return n.child(ctx, v), 0
}

func (n *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if n.fs.gone() {
		return nil, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	var ents []fuse.DirEntry
	for name, v := range n.d.entries {
		e := fuse.DirEntry{Name: name, Mode: syscall.S_IFREG}
		switch c := v.(type) {
		case *fileData:
			e.Ino = c.ino
		case *dirData:
			e.Ino, e.Mode = c.ino, syscall.S_IFDIR
		}
		ents = append(ents, e)
	}
	return fs.NewListDirStream(ents), 0
}

func (n *dirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.fs.gone() {
		return nil, nil, 0, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if _, ok := n.d.entries[name]; ok {
		return nil, nil, 0, syscall.EEXIST
	}
	fd := n.fs.newFile()
	n.d.entries[name] = fd
	attr(fd, &out.Attr)
	return n.child(ctx, fd), nil, 0, 0
}

func (n *dirNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.fs.gone() {
		return nil, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if _, ok := n.d.entries[name]; ok {
		return nil, syscall.EEXIST
	}
	d := n.fs.newDir()
	n.d.entries[name] = d
	attr(d, &out.Attr)
	return n.child(ctx, d), 0
}

func (n *dirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	v, ok := n.d.entries[name]
	if !ok {
		return syscall.ENOENT
	}
	if _, isDir := v.(*dirData); isDir {
		return syscall.EISDIR
	}
	delete(n.d.entries, name)
	return 0
}

func (n *dirNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	v, ok := n.d.entries[name]
	if !ok {
		return syscall.ENOENT
	}
	d, isDir := v.(*dirData)
	if !isDir {
		return syscall.ENOTDIR
	}
	if len(d.entries) > 0 {
		return syscall.ENOTEMPTY
	}
	delete(n.d.entries, name)
	return 0
}

func (n *dirNode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	to, ok := newParent.(*dirNode)
	if !ok {
		return syscall.EXDEV
	}
	v, ok := n.d.entries[name]
	if !ok {
		return syscall.ENOENT
	}
	if old, exists := to.d.entries[newName]; exists {
		if flags&1 != 0 { // RENAME_NOREPLACE
			return syscall.EEXIST
		}
		if _, isDir := old.(*dirData); isDir {
			return syscall.EISDIR
		}
	}
	if flags&^1 != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, WHITEOUT: not modelled
	}
	delete(n.d.entries, name)
	to.d.entries[newName] = v
	return 0
}

// Fsync on a directory makes its entries durable.
func (n *dirNode) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.d.durable = cloneEntries(n.d.entries)
	n.fs.dirSyncs++
	return 0
}

func (n *fileNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	attr(n.f, &out.Attr)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.fs.gone() {
		return nil, 0, syscall.EIO
	}
	if flags&syscall.O_TRUNC != 0 {
		n.fs.mu.Lock()
		n.resize(0)
		n.fs.mu.Unlock()
	}
	return nil, 0, 0
}

// resize changes the visible size (mu held); the pages it touches are dirty.
func (n *fileNode) resize(size int64) {
	f := n.f
	old := int64(len(f.data))
	if size > old {
		f.data = append(f.data, make([]byte, size-old)...)
	} else {
		f.data = f.data[:size]
	}
	lo, hi := min(old, size), max(old, size)
	for p := lo / PageSize; p*PageSize < hi; p++ {
		f.dirty[p] = true
	}
}

func (n *fileNode) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		n.resize(int64(sz))
	}
	attr(n.f, &out.Attr)
	return 0
}

func (n *fileNode) Allocate(ctx context.Context, _ fs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if end := int64(off + size); mode == 0 && end > int64(len(n.f.data)) {
		n.resize(end)
	}
	return 0
}

func (n *fileNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.fs.gone() {
		return nil, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	if off >= int64(len(n.f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(n.f.data)))
	return fuse.ReadResultData(slices.Clone(n.f.data[off:end])), 0
}

func (n *fileNode) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.fs.gone() {
		return 0, syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	end := off + int64(len(data))
	if end > int64(len(n.f.data)) {
		n.resize(end)
	}
	copy(n.f.data[off:end], data)
	for p := off / PageSize; p*PageSize < end; p++ {
		n.f.dirty[p] = true
	}
	return uint32(len(data)), 0
}

// Fsync (and fdatasync) makes the file's data and size durable — not its
// name: that takes an fsync of the directory.
func (n *fileNode) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	if n.fs.gone() {
		return syscall.EIO
	}
	n.fs.mu.Lock()
	defer n.fs.mu.Unlock()
	n.f.durable = slices.Clone(n.f.data)
	clear(n.f.dirty)
	n.fs.syncs++
	return 0
}

// Flush (close) makes nothing durable.
func (n *fileNode) Flush(ctx context.Context, _ fs.FileHandle) syscall.Errno { return 0 }

// Available reports whether this machine can mount one (root, /dev/fuse).
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("powercut: needs root to mount (tests run as root in CI)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("powercut: /dev/fuse: %w", err)
	}
	return nil
}
