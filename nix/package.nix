# The Rust workspace as one package: every binary (mcp-ssh-server, sshlab-agent, sshlab) in
# $out/bin (cargoInstallHook copies each executable of the workspace). The check phase runs the
# tests that need no root: the library unit tests (integration tests start sshd and namespaces).
{
  lib,
  rustPlatform,
}: let
  root = ../.;
  cargo = builtins.fromTOML (builtins.readFile ../Cargo.toml);
in
  rustPlatform.buildRustPackage {
    pname = "sshlab";
    inherit (cargo.workspace.package) version;
    src = lib.fileset.toSource {
      inherit root;
      fileset = lib.fileset.unions [
        ../Cargo.toml
        ../Cargo.lock
        ../crates
        ../vms/topology.toml
        ../netem/profiles.toml
      ];
    };
    cargoLock.lockFile = ../Cargo.lock;
    cargoTestFlags = ["--workspace" "--lib"];
    meta = {
      description = "Load-testing lab for an MCP server that automates SSH";
      mainProgram = "sshlab";
      platforms = lib.platforms.linux;
    };
  }
