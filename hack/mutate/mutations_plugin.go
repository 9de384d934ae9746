package main

// pluginMutations break the contract points of the kubectl plugin's yield. See
// mutations_root.go for the format; set Pkg to the package's directory.
var pluginMutations = []mutation{}
