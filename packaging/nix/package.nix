# tiffin as a Nix package. `withTray = false` is tiffin-headless: the same `tiffin` binary
# without the GTK tray and its dependencies, for servers.
{ lib
, rustPlatform
, pkg-config
, wrapGAppsHook3
, gtk3
, libayatana-appindicator
, xdotool
, openssl
, libssh2
, zlib
, withTray ? true
}:

let
  cargoToml = builtins.fromTOML (builtins.readFile ../../Cargo.toml);
in
rustPlatform.buildRustPackage {
  pname = if withTray then "tiffin" else "tiffin-headless";
  inherit (cargoToml.package) version;

  # The repository without what is not source (target/, the flake's own directory listing).
  src = lib.cleanSourceWith {
    src = ../..;
    filter = path: type:
      lib.cleanSourceFilter path type && baseNameOf path != "target";
  };

  cargoLock.lockFile = ../../Cargo.lock;

  buildNoDefaultFeatures = !withTray;

  nativeBuildInputs = [ pkg-config ] ++ lib.optionals withTray [ wrapGAppsHook3 ];
  buildInputs = [ openssl libssh2 zlib ]
    ++ lib.optionals withTray [ gtk3 libayatana-appindicator xdotool ];

  # Link the system's libssh2 and OpenSSL instead of building vendored copies.
  env = {
    LIBSSH2_SYS_USE_PKG_CONFIG = "1";
    OPENSSL_NO_VENDOR = "1";
  };

  # The integration tests need root, a real sshd, D-Bus and Xvfb, which the build sandbox has
  # not; the unit tests are pure.
  cargoTestFlags = [ "--lib" ];

  postInstall = ''
    install -Dm644 packaging/systemd/tiffin-agent.service $out/lib/systemd/system/tiffin-agent.service
    substituteInPlace $out/lib/systemd/system/tiffin-agent.service \
      --replace-fail /usr/local/bin/tiffin $out/bin/tiffin
  '' + lib.optionalString withTray ''
    install -Dm644 packaging/xdg/tiffin-tray.desktop $out/share/applications/tiffin-tray.desktop
    # `Icon=tiffin` in the desktop entry resolves through the hicolor theme.
    install -Dm644 assets/icons/tiffin.svg $out/share/icons/hicolor/scalable/apps/tiffin.svg
    for size in 16 22 32 48; do
      install -Dm644 assets/icons/$size/tiffin.png $out/share/icons/hicolor/''${size}x''${size}/apps/tiffin.png
    done
  '';

  # Only the tray needs the GTK environment; `tiffin` stays a plain binary.
  dontWrapGApps = true;
  postFixup = lib.optionalString withTray ''
    # tray-icon loads libayatana-appindicator3 with dlopen, so it is not in the RUNPATH.
    gappsWrapperArgs+=(--prefix LD_LIBRARY_PATH : ${lib.makeLibraryPath [ libayatana-appindicator ]})
    wrapGApp $out/bin/tiffin-tray
  '';

  meta = {
    description = cargoToml.package.description;
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "tiffin";
    platforms = lib.platforms.linux;
  };
}
