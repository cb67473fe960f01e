// Types of the ESM entry point (index.mjs): the same API as index.d.ts, plus a default export.
import * as tether from './index.js';

export * from './index.js';
export default tether;
