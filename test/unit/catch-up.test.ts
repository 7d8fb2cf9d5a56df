import { describe, expect, it } from 'vitest';
import { catchUpDue } from '../../src/schedule/catch-up.js';

describe('catchUpDue', () => {
  const now = new Date('2024-06-10T12:00:00.000Z');
  const ago = (seconds: number) => new Date(now.getTime() - seconds * 1000).toISOString();
  const day = 86400;

  it.each([
    { what: 'never succeeded', lastSuccess: undefined, interval: day, due: true },
    { what: 'an empty last success', lastSuccess: '', interval: day, due: true },
    { what: 'succeeded an hour ago, daily schedule', lastSuccess: ago(3600), interval: day, due: false },
    { what: 'succeeded exactly one interval ago', lastSuccess: ago(day), interval: day, due: false },
    { what: 'succeeded one interval and a second ago', lastSuccess: ago(day + 1), interval: day, due: true },
    { what: 'succeeded two days ago, daily schedule', lastSuccess: ago(2 * day), interval: day, due: true },
    { what: 'succeeded two hours ago, hourly schedule', lastSuccess: ago(7200), interval: 3600, due: true },
    { what: 'last success in the future (clock stepped back)', lastSuccess: ago(-3600), interval: day, due: false },
  ])('$what: due=$due', ({ lastSuccess, interval, due }) => {
    expect(catchUpDue(lastSuccess, now, interval)).toBe(due);
  });
});
