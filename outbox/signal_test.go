package outbox

import (
	"os/signal"
	"syscall"
)

func ignoreSIGXFSZ() { signal.Ignore(syscall.SIGXFSZ) }

func fdatasync(f interface{ Fd() uintptr }) error { return syscall.Fdatasync(int(f.Fd())) }
