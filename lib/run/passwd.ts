// Generated /etc/passwd and /etc/group: the container's user and group must
// have names (shells, ssh, MPI launchers look them up), and the image can't
// know who will run it.

import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';

export interface Identity {
  hostUid: number; hostGid: number;
  uid: number; gid: number;           // inside
  user: string; group: string;        // host names of hostUid/hostGid
  dummyUser: boolean; dummyGroup: boolean;   // no host passwd/group entry: names made up
}

function hostGroupName(gid: number): string | null {
  try {
    for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f.length >= 3 && Number(f[2]) === gid && f[2] !== '') return f[0];
    }
  } catch { /* no /etc/group: fall through */ }
  return null;
}

export function identity(uid: number | null, gid: number | null): Identity {
  const hostUid = process.getuid!(), hostGid = process.getgid!();
  let user: string, dummyUser = false;
  try {
    user = userInfo().username;
  } catch {
    user = process.env.USER ?? `uid${hostUid}`;
    dummyUser = true;
  }
  const group = hostGroupName(hostGid);
  return {
    hostUid, hostGid, uid: uid ?? hostUid, gid: gid ?? hostGid,
    user, group: group ?? `gid${hostGid}`, dummyUser, dummyGroup: group === null,
  };
}

export function passwdFile(id: Identity): string {
  const lines = ['root:x:0:0:root:/root:/bin/sh'];
  if (id.uid !== 0 && id.uid !== 65534)
    lines.push(`${id.user}:x:${id.uid}:${id.gid}:${id.user}:/home/${id.user}:/bin/sh`);
  lines.push('nobody:x:65534:65534:nobody:/:/bin/false');
  return lines.join('\n') + '\n';
}

export function groupFile(id: Identity): string {
  const lines = ['root:x:0:'];
  if (id.gid !== 0 && id.gid !== 65534) lines.push(`${id.group}:x:${id.gid}:`);
  lines.push('nogroup:x:65534:');
  return lines.join('\n') + '\n';
}
