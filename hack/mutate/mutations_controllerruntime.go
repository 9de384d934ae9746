package main

// controllerRuntimeMutations break the contract points of module controllerruntime (Gate and Sharder). See
// mutations_root.go for the format; set Pkg to the package's directory.
var controllerRuntimeMutations = []mutation{}
