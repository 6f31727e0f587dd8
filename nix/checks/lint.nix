# Formatting (alejandra) and dead code (deadnix) over every .nix file of the repository:
# the same checks scripts/nix-check runs where Nix cannot build.
{pkgs}: let
  inherit (pkgs) lib;
  nixFiles = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.fileFilter (f: f.hasExt "nix") ../..;
  };
  lint = name: tool: command:
    pkgs.runCommand "sshlab-${name}" {nativeBuildInputs = [tool];} ''
      cd ${nixFiles}
      ${command}
      touch $out
    '';
in {
  alejandra = lint "alejandra" pkgs.alejandra "alejandra --check .";
  deadnix = lint "deadnix" pkgs.deadnix "deadnix --fail .";
}
