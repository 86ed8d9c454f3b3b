def go():
    n = int(input("n? "))
    t = 0
    for i in range(10):
        print(n*i)
        t = t + n*i
    print(t)

go()
