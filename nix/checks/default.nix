# `nix flake check`: each file returns an attrset of named checks; merged here
# (the microvm.nix checks/ layout).
{
  pkgs,
  sshlab,
}:
{package = sshlab;}
// import ./lint.nix {inherit pkgs;}
// import ./vm-test.nix {inherit pkgs sshlab;}
