package main

// shardMutations break the contract points of package shard. See
// mutations_root.go for the format; set Pkg to the package's directory.
var shardMutations = []mutation{}
