/** Exit codes for processes stopped by a signal. */
import { constants } from 'node:os';

/** The conventional exit code of a process stopped by `sig`: 128 + its number (SIGINT 130, SIGTERM 143), as shells report it. */
export function signalExitCode(sig: NodeJS.Signals): number {
  return 128 + (constants.signals[sig] ?? 0);
}
