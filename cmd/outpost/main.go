// Command outpost is an offline-first edge inference runtime: it runs
// quantized ONNX models on a device and keeps every result until a hub has it.
// See `outpost help` and the README.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outpost-edge/outpost/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
