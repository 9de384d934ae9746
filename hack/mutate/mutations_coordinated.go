package main

// coordinatedMutations break the contract points of coordinated election (coordinated.go, root package). See
// mutations_root.go for the format; set Pkg to the package's directory.
var coordinatedMutations = []mutation{}
