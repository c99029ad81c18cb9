#!/usr/bin/env python3
"""Writes a veto-format CSV of N contacts with varied consent histories.

Usage: gen_contacts.py N > contacts.csv

Each contact gets one row (a grant, withdrawal, purchase or inquiry), so N
rows make N contacts and N ledger events. Deterministic: the same N gives
the same file.
"""
import random
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
rnd = random.Random(42)
out = sys.stdout
out.write("email,topic,action,at,ip,jurisdiction,product_group,name\n")
topics = ["news", "offers", "events"]
juris = ["UK", "EU", "US", "CA", "UK|EU", ""]
for i in range(n):
    r = rnd.random()
    day = 1 + i % 28
    month = 1 + (i // 28) % 12
    at = f"2025-{month:02d}-{day:02d}T{i % 24:02d}:{i % 60:02d}:00Z"
    ip = f"198.51.{i % 250}.{(i // 250) % 250 + 1}"
    j = juris[i % len(juris)]
    if r < 0.55:
        row = f"c{i}@example.com,{topics[i % 3]},grant,{at},{ip},{j},,Person {i}"
    elif r < 0.7:
        row = f"c{i}@example.com,{topics[i % 3]},withdraw,{at},{ip},{j},,Person {i}"
    elif r < 0.9:
        row = f"c{i}@example.com,,purchase,{at},{ip},{j},shoes,Person {i}"
    else:
        row = f"c{i}@example.com,,inquiry,{at},{ip},{j},hats,Person {i}"
    out.write(row + "\n")
