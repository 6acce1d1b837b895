// An ES module handler (index.mjs), with top-level await during init.
import { basename } from 'node:path';

const loadedAt = await Promise.resolve(Date.now());
let count = 0;

export const handler = async (event, context) => {
  count += 1;
  return { esm: true, file: basename(import.meta.url), loadedAt, count, requestId: context.awsRequestId, event };
};
