'use strict';
// Loads the addon built from source by `npm install` (scripts/build.js). There is no prebuilt
// binary: the file name carries the platform only so that one checkout can serve several.

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

function load() {
  const file = path.join(__dirname, fileName);
  try {
    return require(file);
  } catch (err) {
    if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(fileName)) {
      const e = new Error(
        `tether-session: the native addon ${fileName} is missing. It is built from source by ` +
          '`npm install` (which runs `node scripts/build.js`: a Rust toolchain with cargo is ' +
          `needed); run that in ${__dirname}.`,
      );
      e.code = 'TETHER_ADDON_MISSING';
      e.cause = err;
      throw e;
    }
    throw err;
  }
}

module.exports = { load, fileName, platformSuffix };
