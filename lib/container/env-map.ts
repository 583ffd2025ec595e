// The container's environment while it is planned: a Map of the host's
// variables that the planner changes. The Host hands it out (host.ts): the
// recording host's subclass (recording-host.ts) makes each read of a host variable a
// dependency and each change an edit of the plan.

/**
 * The environment being built. Once TRACE is set (under -v), every change
 * is reported as one line, whoever makes it (fix-ups, device injection, MPI
 * defaults, --set-env, --unset-env), as Charliecloud does: a script's
 * author can see why a variable is what it is.
 */
export class Env extends Map<string, string> {
  trace: ((line: string) => void) | null = null;

  /** An Env holding VARS (the host's), as the planner's starting point. */
  static from<T extends Env>(this: new () => T, vars: NodeJS.ProcessEnv): T {
    const env = new this();
    for (const [k, v] of Object.entries(vars))
      if (v !== undefined) Map.prototype.set.call(env, k, v);
    return env;
  }

  override set(name: string, value: string): this {
    if (this.trace && this.get(name) !== value) this.trace(`environment: ${name}=${value}`);
    return super.set(name, value);
  }

  override delete(name: string): boolean {
    if (this.trace && this.has(name)) this.trace(`environment: unset ${name}`);
    return super.delete(name);
  }

  override [Symbol.iterator](): MapIterator<[string, string]> { return this.entries(); }

  /** The final environment, for the plan (an output, not a decision). */
  final(): [string, string][] { return [...super.entries()]; }
}
