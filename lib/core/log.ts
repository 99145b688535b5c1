/**
 * Log lines a person can read: one line per event, as text (`time LEVEL
 * message key=value ...`) or as one JSON object per line (LOG_FORMAT), at
 * or above a level (LOG_LEVEL).
 */

/** How important a line is, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** How lines are written. */
export type LogFormat = "text" | "json";

/** Values a line may carry besides its message. */
export type LogFields = Record<
  string,
  string | number | boolean | null | undefined
>;

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Writes log lines at or above its level. */
export interface Logger {
  /** Whether a line at `level` would be written. */
  enabled(level: LogLevel): boolean;
  log(level: LogLevel, message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

function textValue(value: string | number | boolean | null): string {
  const text = String(value);
  return /^[^\s"=]+$/.test(text) ? text : JSON.stringify(text);
}

/** One line in `format`, without the newline. */
export function formatLine(
  format: LogFormat,
  level: LogLevel,
  message: string,
  fields: LogFields = {},
  time = new Date(),
): string {
  const present = Object.entries(fields).filter(([, v]) => v !== undefined) as [
    string,
    string | number | boolean | null,
  ][];
  if (format === "json") {
    return JSON.stringify({
      time: time.toISOString(),
      level,
      msg: message,
      ...Object.fromEntries(present),
    });
  }
  const pairs = present.filter(([, v]) => v !== message).map(([k, v]) =>
    `${k}=${textValue(v)}`
  );
  return [time.toISOString(), level.toUpperCase().padEnd(5), message, ...pairs]
    .join(" ");
}

/**
 * A logger writing to `write` (by default stdout for debug and info, stderr
 * for warn and error).
 */
export function createLogger(
  options: {
    format?: LogFormat;
    level?: LogLevel;
    write?: (line: string, level: LogLevel) => void;
  } = {},
): Logger {
  const format = options.format ?? "text";
  const min = RANK[options.level ?? "info"];
  const write = options.write ?? ((line, level) => {
    if (RANK[level] >= RANK.warn) console.error(line);
    else console.log(line);
  });
  const log = (level: LogLevel, message: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    write(formatLine(format, level, message, fields), level);
  };
  return {
    enabled: (level) => RANK[level] >= min,
    log,
    debug: (m, f) => log("debug", m, f),
    info: (m, f) => log("info", m, f),
    warn: (m, f) => log("warn", m, f),
    error: (m, f) => log("error", m, f),
  };
}
