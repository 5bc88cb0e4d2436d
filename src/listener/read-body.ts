// A request body, up to a bound: past it the rest is drained and dropped, never buffered.
import type { IncomingMessage } from 'node:http';

/** Resolves the body, or undefined when it is larger than `max` bytes or the stream fails. */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(size > max ? undefined : Buffer.concat(chunks)));
    req.on('error', () => resolve(undefined));
    // A socket reaped mid-body (request timeout) must not leave this promise, and its request, pending.
    req.on('close', () => resolve(undefined));
  });
}
