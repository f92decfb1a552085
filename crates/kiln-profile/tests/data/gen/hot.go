// Known hot functions for Kiln's Go pprof golden file: CPU split 60/30/10
// between burnA, burnB and burnC, recorded with runtime/pprof.
package main

import (
	"os"
	"runtime/pprof"
	"time"
)

var sink uint64

//go:noinline
func spin(n int, x uint64) uint64 {
	for i := 0; i < n; i++ {
		x = x*6364136223846793005 + uint64(i)
	}
	return x
}

//go:noinline
func burnA() uint64 { return spin(6000000, 1) }

//go:noinline
func burnB() uint64 { return spin(3000000, 2) }

//go:noinline
func burnC() uint64 { return spin(1000000, 3) }

func main() {
	f, err := os.Create(os.Args[1])
	if err != nil {
		panic(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		panic(err)
	}
	until := time.Now().Add(4 * time.Second)
	for time.Now().Before(until) {
		sink += burnA() + burnB() + burnC()
	}
	pprof.StopCPUProfile()
	f.Close()
}
