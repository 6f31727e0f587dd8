{
  description = "sshlab: load-testing lab for an MCP server that automates SSH (three microVMs, netem, Rust)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    microvm = {
      url = "github:microvm-nix/microvm.nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = {
    self,
    nixpkgs,
    microvm,
  }: let
    systems = ["x86_64-linux" "aarch64-linux"];
    forAll = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    lab = import ./nix/lib/lab.nix {};

    # One NixOS system per [[vm]] of vms/topology.toml: the role module in its microVM wrapper.
    vmSystem = system: name:
      nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          microvm.nixosModules.microvm
          (import ./vms/microvm.nix {inherit name;})
          {sshlab.package = self.packages.${system}.default;}
        ];
      };
    runners = system: nixpkgs.lib.genAttrs lab.vmNames (name: (vmSystem system name).config.microvm.declaredRunner);
  in {
    lib = lab;

    nixosModules = {
      common = ./vms/common.nix;
      agent = ./vms/agent.nix;
      mcp = ./vms/mcp.nix;
      target = ./vms/target.nix;
    };

    nixosConfigurations = nixpkgs.lib.genAttrs lab.vmNames (vmSystem "x86_64-linux");

    packages = forAll (system: pkgs: let
      r = runners system;
    in rec {
      default = pkgs.callPackage ./nix/package.nix {};
      sshlab = default;
      agent-vm = r.agent;
      mcp-vm = r.mcp;
      ssh-target-vm = r.target;
      # The seed's names: these runners already use the TAP interfaces.
      ssh-target-vm-tap-debug = ssh-target-vm;
      mcp-vm-tap-debug = mcp-vm;
    });

    apps = forAll (system: pkgs:
      import ./nix/apps.nix {
        inherit (pkgs) lib;
        inherit pkgs;
        sshlab = self.packages.${system}.default;
        runners = runners system;
      });

    checks = forAll (system: pkgs:
      import ./nix/checks {
        inherit pkgs;
        sshlab = self.packages.${system}.default;
      });

    devShells = forAll (system: pkgs: {
      default = pkgs.mkShell {
        inputsFrom = [self.packages.${system}.default];
        packages = [
          pkgs.cargo
          pkgs.rustc
          pkgs.clippy
          pkgs.rustfmt
          pkgs.rust-analyzer
          pkgs.cargo-nextest
          pkgs.qemu
          pkgs.iproute2
          pkgs.openssh
          pkgs.alejandra
          pkgs.deadnix
          pkgs.jq
        ];
      };
    });

    formatter = forAll (_: pkgs: pkgs.alejandra);
  };
}
