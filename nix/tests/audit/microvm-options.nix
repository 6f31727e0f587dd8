# Lists every option path declared under `microvm.` by a microvm.nix checkout, without
# nixpkgs: the guest modules are evaluated against a stub `lib` whose mkOption records only
# the type, and the walker descends into submodules (list elements as `*`, attrs as `<name>`).
# Usage: nix-instantiate --eval --strict --json nix/tests/audit/microvm-options.nix --arg src /path/to/microvm.nix
{src}: let
  opt = a: {
    _opt = true;
    type = a.type or null;
  };
  wrap = suffix: t: {
    _wrap = t;
    _suffix = suffix;
  };
  leaf = {_leaf = true;};
  types = {
    bool = leaf;
    str = leaf;
    lines = leaf;
    path = leaf;
    package = leaf;
    pkgs = leaf;
    port = leaf;
    int = leaf;
    raw = leaf;
    anything = leaf;
    attrs = leaf;
    unspecified = leaf;
    nonEmptyStr = leaf;
    singleLineStr = leaf;
    ints = {
      positive = leaf;
      unsigned = leaf;
      u8 = leaf;
      u16 = leaf;
      u32 = leaf;
      between = _: _: leaf;
    };
    enum = _: leaf;
    strMatching = _: leaf;
    nullOr = t: t;
    either = _: _: leaf;
    oneOf = _: leaf;
    coercedTo = _: _: t: t;
    listOf = wrap "*";
    attrsOf = wrap "<name>";
    lazyAttrsOf = wrap "<name>";
    submodule = m: {_sub = m;};
  };
  lib = {
    inherit types;
    mkOption = opt;
    mkEnableOption = _: opt {};
    mkPackageOption = _: _: _: opt {};
    literalExpression = x: x;
    literalMD = x: x;
    mdDoc = x: x;
    mkIf = _: x: x;
    mkMerge = x: x;
    mkDefault = x: x;
    mkRemovedOptionModule = _: _: {};
    mkRenamedOptionModule = _: _: {};
    versionAtLeast = _: _: true;
    optional = _: _: [];
    optionals = _: _: [];
    optionalString = _: _: "";
    concatStringsSep = builtins.concatStringsSep;
    any = builtins.any;
  };
  args = {
    inherit lib;
    config = {};
    pkgs = {};
    options = {};
    name = "<name>";
  };
  load = m:
    if builtins.isFunction m
    then m args
    else m;

  walk = prefix: v:
    if v ? _opt
    then [prefix] ++ typeOpts prefix v.type
    else if builtins.isAttrs v
    then builtins.concatMap (n: walk "${prefix}.${n}" v.${n}) (builtins.attrNames v)
    else [];
  typeOpts = prefix: t:
    if t == null || t ? _leaf
    then []
    else if t ? _wrap
    then typeOpts "${prefix}.${t._suffix}" t._wrap
    else if t ? _sub
    then walk prefix ((load t._sub).options or {})
    else [];

  files = map (f: src + "/nixos-modules/microvm/${f}") (
    builtins.filter (f: builtins.match ".*\\.nix" f != null)
    (builtins.attrNames (builtins.readDir (src + "/nixos-modules/microvm")))
  );
  declared = builtins.concatMap (f: let
    m = load (import f);
  in
    if m ? options.microvm
    then walk "microvm" m.options.microvm
    else [])
  files;
in
  builtins.sort builtins.lessThan declared
