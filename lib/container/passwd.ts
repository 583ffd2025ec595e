// Generated /etc/passwd and /etc/group: the container's user and group must
// have names (shells, ssh, MPI launchers look them up), and the image can't
// know who will run it.

import type { Host } from './host.js';

export interface Identity {
  hostUid: number; hostGid: number;
  uid: number; gid: number;           // inside
  user: string; group: string;        // host names of hostUid/hostGid ($USER if none: --home's /home/$USER)
  ctrUser: string; ctrGroup: string;  // names of uid/gid inside: the host's, else made up
  dummyUser: boolean; dummyGroup: boolean;   // uid/gid have no host passwd/group entry: names made up
}

/** NAME of ID in a host passwd/group file (fields NAME:x:ID:...), or null. */
function hostName(host: Host, file: string, id: number): string | null {
  try {
    for (const line of host.readFile(file, 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length >= 3 && f[2] !== '' && Number(f[2]) === id) return f[0];
    }
  } catch { /* no such file: fall through */ }
  return null;
}

/** The host's name for the caller's own uid (NSS too), else null. */
function ownName(host: Host): string | null {
  try { return host.user().username; } catch { return null; }
}

// As Charliecloud: the container's uid and gid are named as the host names
// them (--uid/--gid may pick ids other than yours); ids the host doesn't know
// get "dummy info", said under -v only (main.ts).
export function identity(host: Host, uid: number | null, gid: number | null): Identity {
  const hostUid = host.uid(), hostGid = host.gid();
  const own = ownName(host);
  const user = own ?? host.env('USER') ?? `uid${hostUid}`;
  const hostGroup = hostName(host, '/etc/group', hostGid);
  const group = hostGroup ?? `gid${hostGid}`;
  const ctrUid = uid ?? hostUid, ctrGid = gid ?? hostGid;
  const ctrUserFound = ctrUid === hostUid ? own : hostName(host, '/etc/passwd', ctrUid);
  // The same lookup when the gid is the same (it usually is): /etc/group read once.
  const ctrGroupFound = ctrGid === hostGid ? hostGroup : hostName(host, '/etc/group', ctrGid);
  return {
    hostUid, hostGid, uid: ctrUid, gid: ctrGid, user, group,
    ctrUser: ctrUserFound ?? (ctrUid === hostUid ? user : 'charlie'),
    ctrGroup: ctrGroupFound ?? (ctrGid === hostGid ? group : 'charliegroup'),
    dummyUser: ctrUserFound === null, dummyGroup: ctrGroupFound === null,
  };
}

export function passwdFile(id: Identity): string {
  const lines = ['root:x:0:0:root:/root:/bin/sh'];
  if (id.uid !== 0 && id.uid !== 65534)
    lines.push(`${id.ctrUser}:x:${id.uid}:${id.gid}:${id.ctrUser}:/home/${id.ctrUser}:/bin/sh`);
  lines.push('nobody:x:65534:65534:nobody:/:/bin/false');
  return lines.join('\n') + '\n';
}

export function groupFile(id: Identity): string {
  const lines = ['root:x:0:'];
  if (id.gid !== 0 && id.gid !== 65534) lines.push(`${id.ctrGroup}:x:${id.gid}:`);
  lines.push('nogroup:x:65534:');
  return lines.join('\n') + '\n';
}
