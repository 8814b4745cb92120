import { formatBytes } from "../../provider/common/sizes";
import { showProgress } from "../../provider/cli/progress";

const MiB = 1024 * 1024;

/** A stream that keeps what is written; a terminal or not. */
function output(isTTY: boolean) {
  const written: string[] = [];
  return { isTTY, written, write: (text: string) => written.push(text) };
}

describe("coffer's progress display", () => {
  test("bytes in binary units, a decimal below 10", () => {
    expect([0, 512, 1536, 412 * MiB, 1024 * MiB, 15.5 * 1024 * MiB].map(formatBytes)).toEqual([
      "0 B",
      "512 B",
      "1.5 KiB",
      "412 MiB",
      "1.0 GiB",
      "16 GiB",
    ]);
  });

  test("off a terminal: one plain line per 10%, however often it is told", () => {
    const out = output(false);
    const progress = showProgress(out, "restore vda", 1024 * MiB);
    for (let percent = 0; percent <= 100; percent += 0.5) progress.update(percent);
    progress.end();
    expect(out.written).toHaveLength(10);
    expect(out.written[3]).toBe("restore vda: 40% (410 MiB of 1.0 GiB)\n");
    expect(out.written[9]).toBe("restore vda: 100% (1.0 GiB of 1.0 GiB)\n");
  });

  test("on a terminal: one line redrawn in place with percent, bytes and rate, ended by a newline", () => {
    const out = output(true);
    let now = 0;
    const progress = showProgress(out, "verify vda", 1024 * MiB, () => now);
    progress.update(1);
    now = 50;
    progress.update(2); // too soon after the last draw: skipped
    now = 2000;
    progress.update(40);
    progress.update(40.5); // the same whole percent: nothing new to draw
    now = 2001;
    progress.update(100); // the end is always drawn
    progress.end();
    expect(out.written).toEqual([
      `\rverify vda [--------------------]   1% 10 MiB of 1.0 GiB\x1b[K`,
      `\rverify vda [########------------]  40% 410 MiB of 1.0 GiB, 205 MiB/s\x1b[K`,
      `\rverify vda [####################] 100% 1.0 GiB of 1.0 GiB, 512 MiB/s\x1b[K`,
      "\n",
    ]);
  });

  test("a step that shows nothing ends without a newline", () => {
    const out = output(true);
    showProgress(out, "verify vda", MiB).end();
    expect(out.written).toEqual([]);
  });
});
