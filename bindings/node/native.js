'use strict';
// Loads the native addon, as napi-rs packages do: first the file built from source next to this
// one (`npm install` in a Tether checkout runs scripts/build.js), then the prebuilt platform
// package that npm installed from `optionalDependencies` (`tether-session-linux-x64-gnu`, ...;
// `cargo xtask dist` builds them).

const path = require('node:path');

/** `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`, ... (napi-rs's naming). */
function platformSuffix() {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime;
    return `${platform}-${arch}-${glibc ? 'gnu' : 'musl'}`;
  }
  if (platform === 'win32') return `${platform}-${arch}-msvc`;
  return `${platform}-${arch}`;
}

const fileName = `tether-session.${platformSuffix()}.node`;
const platformPackage = `tether-session-${platformSuffix()}`;

function missing(err) {
  return err && err.code === 'MODULE_NOT_FOUND';
}

function load() {
  const file = path.join(__dirname, fileName);
  try {
    return require(file);
  } catch (err) {
    if (!(missing(err) && String(err.message).includes(fileName))) throw err;
  }
  try {
    return require(platformPackage);
  } catch (err) {
    if (!(missing(err) && String(err.message).includes(platformPackage))) throw err;
    const e = new Error(
      `tether-session: no native addon for this platform (${platformSuffix()}). The prebuilt ` +
        `package ${platformPackage} is not installed (npm installs it with tether-session where ` +
        'one is published: linux-x64-gnu), and no addon was built from source here. To build ' +
        'it, install tether-session from a Tether checkout (`npm install <checkout>/bindings/node`, ' +
        `which runs cargo: a Rust toolchain is needed), or run \`npm install\` in ${__dirname} ` +
        'if that is a checkout.',
    );
    e.code = 'TETHER_ADDON_MISSING';
    e.cause = err;
    throw e;
  }
}

module.exports = { load, fileName, platformPackage, platformSuffix };
