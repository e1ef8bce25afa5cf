/**
 * The run's tally of unreadable training images: the workers replace each
 * one with another image and report how many slots of their batch they
 * replaced (step metric skippedImages); the coordinator sums them over ranks
 * and steps here and fails the run when they exceed maxBadImageShare of the
 * images drawn.
 */

/** Images drawn before the share is taken over the real count: below it, over min(this, training images). */
const BAD_IMAGE_MIN_DENOMINATOR = 1000;

export interface BadImageTally {
  /** Batch slots whose image was unreadable (and was replaced), over all ranks and steps so far. */
  skipped: number;
  /** Images drawn so far, over all ranks. */
  drawn: number;
}

/** skipped / drawn (0 before anything is drawn). */
export function skippedShare(t: BadImageTally): number {
  return t.drawn > 0 ? t.skipped / t.drawn : 0;
}

/**
 * Null while the skipped images are within `maxShare`, else the error that
 * ends the run, naming the count, the share and the limit. The share is taken
 * over at least min(trainImages, BAD_IMAGE_MIN_DENOMINATOR) images, so one
 * unreadable image in the first small batch does not stop a run whose data is
 * 99.9 % fine.
 */
export function badImageFailure(t: BadImageTally, trainImages: number, maxShare: number): string | null {
  if (t.skipped === 0) return null;
  const denominator = Math.max(t.drawn, Math.min(trainImages, BAD_IMAGE_MIN_DENOMINATOR));
  if (t.skipped <= maxShare * denominator) return null;
  const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
  return (
    `${t.skipped} of the ${t.drawn} training images drawn so far were unreadable and skipped (${pct(skippedShare(t))}), more than maxBadImageShare ${maxShare} (${pct(maxShare)})` +
    `${denominator > t.drawn ? ` of ${denominator} images` : ''}; the data looks broken: run \`shardface data info\` on it, or raise maxBadImageShare to train on what is readable`
  );
}
