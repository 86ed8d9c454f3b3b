def total(n):
    s = 0
    return s

n = int(input("number? "))
i = 1
while i <= 10:
    print(n * i)
print("done")
