package main

// leaseholdtestMutations break the promises of the test kit's in-memory
// API server (leaseholdtest), which every simulation and many contract
// tests stand on. See mutations_root.go for the format.
var leaseholdtestMutations = []mutation{
	{
		Name:     "leaseholdtest-long-replay-dropped",
		Point:    "a watch's replay is delivered whole however long, as kube-apiserver sends a watch's initial events; the watch stays open",
		File:     "leaseholdtest/watch.go",
		Original: `make(chan watch.Event, n+watchBuffer)`,
		Mutated:  `make(chan watch.Event, watchBuffer)`,
		Pkg:      "leaseholdtest",
		Tests:    []string{"TestLongReplayIsDeliveredWhole"},
		Contract: true,
	},
}
