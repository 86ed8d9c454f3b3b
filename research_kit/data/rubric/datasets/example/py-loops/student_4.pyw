def t(x):
    for a in range(1, 10):
        print(x * a)
    s = 0
    for a in range(1, 10):
        s = s + x * a
    print(s)

y = int(input())
t(y)
