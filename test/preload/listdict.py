# The python workload of the preload tests: a large list and dict, built
# and summed; the output tells whether every object survived paging.
n = 600000
l = [str(i) * 4 for i in range(n)]
d = {i: str(i) for i in range(n)}
print(len(l), sum(len(s) for s in l), sum(len(v) for v in d.values()), sum(d))
