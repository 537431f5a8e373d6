#!/usr/bin/env python3
"""The import graph of the service crate at a git revision: top-level modules and the largest
import cycle among them (computed from every `crate::<module>` outside comments).

Usage: tools/scripts/module_graph.py [REV]   (default HEAD; run from the repository root)
"""
import re,os,sys,subprocess
rev=sys.argv[1] if len(sys.argv) > 1 else "HEAD"
files=subprocess.run(['git','ls-tree','-r','--name-only',rev,'src'],capture_output=True,text=True).stdout.split()
g={}
for f in files:
    if not f.endswith('.rs'): continue
    parts=f.split('/')[1:]
    mod=parts[0].replace('.rs','')
    if mod in ('lib','main'): continue
    txt=subprocess.run(['git','show',f'{rev}:{f}'],capture_output=True,text=True).stdout
    for line in txt.splitlines():
        code=line.split('//')[0]
        for m in re.findall(r'(?<![\w])crate::([a-z_]+)',code):
            if m!=mod: g.setdefault(mod,set()).add(m)
    g.setdefault(mod,set())
# tarjan
idx={};low={};st=[];on=set();sccs=[];c=[0]
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in g.get(v,()):
        if w not in g: continue
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
for v in list(g): 
    if v not in idx: sc(v)
big=max(sccs,key=len)
if len(big) > 1:
    print(f'{rev}: {len(g)} top-level modules; largest import cycle: {len(big)} modules: {sorted(big)}')
else:
    print(f'{rev}: {len(g)} top-level modules; no import cycle')
