// ESM entry point: the same module as index.js (CommonJS), with named exports.
import tether from './index.js';

export const {
  connect,
  Session,
  Subscription,
  TetherError,
  BuiltinStrategy,
  constant,
  exponentialBackoff,
  abortImmediately,
  defaultStrategy,
  CLOSE_REASONS,
} = tether;

export default tether;
